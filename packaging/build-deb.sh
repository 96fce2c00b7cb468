#!/bin/sh
# Builds the Debian package of otpd into target/debian/:
#   packaging/build-deb.sh            (cargo-deb is installed when missing)
# The package is made from the otpd crate's [package.metadata.deb] and holds
# otpd, otpctl and pam_otp.so from target/release.
set -eu
cd "$(dirname "$0")/.."

multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || gcc -print-multiarch)
if [ "$multiarch" != "x86_64-linux-gnu" ]; then
	# otpd/Cargo.toml writes the PAM directory out as
	# usr/lib/x86_64-linux-gnu/security; change that asset for $multiarch.
	echo "build-deb: the package metadata is for x86_64-linux-gnu, this is $multiarch" >&2
	exit 1
fi
if ! cargo deb --version >/dev/null 2>&1; then
	cargo install cargo-deb --locked
fi
cargo build --release -p otpd -p otpctl -p pam_otp
cargo deb -p otpd --no-build "$@"
