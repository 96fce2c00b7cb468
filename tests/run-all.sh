#!/usr/bin/env bash
# Runs the whole test suite, end-to-end tests included, on a fresh Debian
# machine as root: installs the real peers the tests talk to, builds the
# workspace, and runs `cargo test --workspace --all-targets` with
# `--include-ignored` (the end-to-end tests are marked #[ignore] so that a
# plain `cargo test` lists them without running them; here they run, and
# start otpd, aiosmtpd, oathtool, ... themselves).
#
# Not root: the system packages are not installed and every end-to-end test
# fails, saying it needs root; `cargo test --workspace --all-targets` runs
# the other tiers and lists the end-to-end tests as ignored.
set -euo pipefail
cd "$(dirname "$0")/.."

# The peers of the end-to-end tests (Debian package names).
packages=(
  ca-certificates
  python3-aiosmtpd   # the SMTP server that receives setup mails
  python3-pskc       # writes the PSKC seed files that otpcore reads
  oathtool           # the phone: computes TOTP codes
  sqlite3            # ages an enrolment to test expired links
  expect             # types at otpctl's, ssh's and sudo's prompts on a pseudo-terminal
  pamtester          # a PAM login host for pam_otp.so
  valgrind           # checks pam_otp.so's memory use inside pamtester
  openssh-server     # a real sshd with pam_otp in its stack
  openssh-client
  sudo               # sudo with pam_otp in its stack
  freeradius-utils   # radclient, the VPN gateway of the RADIUS tests
  freeradius         # a FreeRADIUS proxy in front of otpd
  openvpn            # an OpenVPN gateway asking otpd through its RADIUS plugin
  openvpn-auth-radius
  strongswan-charon  # a strongSwan IKEv2 gateway asking otpd over RADIUS
  strongswan-swanctl
  libcharon-extra-plugins
  chromium           # the activation page in a real browser
  chromium-driver
  fonts-ipafont-gothic  # Japanese glyphs in the screenshots
  dpkg-dev           # the Debian package: dpkg-shlibdeps for cargo-deb, dpkg-architecture
  systemd            # systemd-analyze verify on the packaged unit
  man-db             # systemd-analyze verify checks the unit's man: pages
  lintian            # reports on the built .deb (printed, not judged)
  groff-base         # checks the man pages render without warnings
  libpam-google-authenticator  # google-authenticator files to import, and the PAM benchmark
  passwd             # useradd/userdel for the test users
  postgresql         # private PostgreSQL servers for the store (never the system cluster)
  slapd              # private OpenLDAP servers: the directory password of RADIUS logins
  ldap-utils         # ldapsearch and friends, to look into a test directory by hand
  libpam-radius-auth # a PAM module asking otpd over RADIUS, with its challenge prompt
  radsecproxy        # a RadSec client in front of otpd's RADIUS over TLS
  prometheus         # scrapes otpd's /metrics (private config and data dir)
  nginx              # the reverse proxy in front of the activation page
  rsyslog            # a real syslog daemon receiving otpd's and pam_otp's lines
  freeradius-ldap    # rlm_ldap, for bench-radius --first-factor ldap (a benchmark, not a test)
  freeradius-postgresql  # rlm_sql_postgresql, for bench-radius --store postgresql (a benchmark, not a test)
  adjtimex           # reads the kernel's clock state, to compare with otpd's /metrics
  time               # GNU time: otpctl's peak memory while it prints a long audit trail
)

if [ "$(id -u)" -eq 0 ]; then
  missing=()
  for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
      missing+=("$p")
    fi
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    echo "run-all: installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    # Install the servers without starting them: the tests start their own.
    policy=/usr/sbin/policy-rc.d
    own_policy=
    if [ ! -e "$policy" ]; then
      printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod +x "$policy" && own_policy=1
    fi
    apt-get install -y --no-install-recommends "${missing[@]}"
    if [ -n "$own_policy" ]; then rm -f "$policy"; fi
  else
    echo "run-all: system packages already installed"
  fi
  # cargo-deb builds the .deb that tests/tests/package.rs installs.
  if ! cargo deb --version >/dev/null 2>&1; then
    echo "run-all: installing cargo-deb"
    cargo install cargo-deb --locked
  fi
else
  echo "run-all: not root; skipping apt-get (the end-to-end tests will fail: they need root)"
fi

cargo build --workspace --all-targets
log=$(mktemp)
trap 'rm -f "$log"' EXIT
# Every test binary runs (--no-fail-fast), so that the closing line counts
# the whole suite; the exit status is cargo's.
status=0
cargo test --workspace --all-targets --no-fail-fast -- --include-ignored 2>&1 | tee "$log" ||
  status=$?
# The store's test battery once more, unchanged, against PostgreSQL: a
# private server in a temp dir (never the system cluster), each test on a
# database of its own.
if [ "$(id -u)" -eq 0 ]; then
  pgdir=$(mktemp -d /tmp/otpd-pg-battery.XXXXXX)
  rmdir "$pgdir"
  admin=$(target/debug/private-postgres start "$pgdir")
  OTPSTORE_TEST_POSTGRES="$admin" cargo test -p otpstore --lib --no-fail-fast 2>&1 | tee -a "$log" ||
    status=$?
  target/debug/private-postgres stop "$pgdir"
  rm -rf "$pgdir"
fi
# One closing line for the whole suite, from every "test result:" line
# ("test result: ok. P passed; F failed; I ignored; ..."): only tests that ran
# and passed count as passed, never ignored ones.
awk '/^test result:/ { p += $4; f += $6 } END { printf "%d passed, %d failed\n", p, f }' "$log"
exit "$status"
