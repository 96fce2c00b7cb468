//! A private OpenLDAP server (Debian's slapd) for tests: its own
//! configuration, certificates and mdb database in a temp dir, never the
//! system's service.
//!
//! The server listens on 127.0.0.1 at two free ports: `ldaps://` and
//! `ldap://` (which offers StartTLS). Its certificate names `localhost` and
//! 127.0.0.1 and is signed by a CA made for this server; a second CA that
//! signed nothing is there for tests that must see TLS fail. The directory
//! `dc=example,dc=com` holds the users of [`User`], each with a random
//! password hashed `{SSHA}`:
//! - `ou=people` and `ou=partners` anyone may search;
//! - `ou=staff` only [`PrivateSlapd::reader_dn`] may search (anonymous
//!   searches do not see it), while its users may still bind;
//! - `twin` is in both `ou=people` and `ou=partners`, so a search for it
//!   finds two entries.
//!
//! Starting a server takes a fraction of a second; a test binary shares
//! one ([`PrivateSlapd::shared`]). A benchmark starts one with thousands
//! of users more in `ou=people` and no log ([`PrivateSlapd::start_for_bench`]). A supervising shell starts slapd and,
//! once its stdin closes (the [`PrivateSlapd`] is dropped or the test
//! process has exited, however it ended), kills it and removes the
//! directory, so no server outlives its tests.

use std::fs;
use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::env::{free_port, write_private_file};
use crate::peers::require_tools;
use crate::process::{describe, run_with_input};

/// The directory's suffix.
pub const SUFFIX: &str = "dc=example,dc=com";

/// How long the server may take to take connections, on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A user of the test directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum User {
    /// `uid=alice,ou=people`.
    Alice,
    /// `uid=bob,ou=people`.
    Bob,
    /// `uid=carol,ou=staff`: found only by [`PrivateSlapd::reader_dn`].
    Carol,
    /// `uid=twin` in `ou=people` and in `ou=partners`, one password.
    Twin,
    /// `ou=people`, a uid made of the characters that DNs and filters
    /// escape: [`METACHARACTER_UID`].
    Special,
}

/// The uid of [`User::Special`].
pub const METACHARACTER_UID: &str = "#pat,q+r<s>;\"t\"=*(u)\\v";

impl User {
    pub const ALL: [User; 5] = [
        User::Alice,
        User::Bob,
        User::Carol,
        User::Twin,
        User::Special,
    ];

    /// The user name, the entry's `uid`.
    pub fn uid(self) -> &'static str {
        match self {
            User::Alice => "alice",
            User::Bob => "bob",
            User::Carol => "carol",
            User::Twin => "twin",
            User::Special => METACHARACTER_UID,
        }
    }

    /// The organizational units the user's entries are in.
    fn units(self) -> &'static [&'static str] {
        match self {
            User::Carol => &["staff"],
            User::Twin => &["people", "partners"],
            _ => &["people"],
        }
    }
}

/// The DN of the entry of `uid` in `unit`, every byte of the uid written
/// as a hex escape (valid for any value, and independent of the escaping
/// that the code under test does).
pub fn user_dn(uid: &str, unit: &str) -> String {
    let value: String = uid.bytes().map(|b| format!("\\{b:02x}")).collect();
    format!("uid={value},ou={unit},{SUFFIX}")
}

/// How to find a user's entry before the bind: [`PrivateSlapd::ldap_table`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bind {
    /// The DN `uid={user},ou=people,...`, no search.
    Template,
    /// An anonymous search for `(uid={user})` in `ou=people`, then a bind
    /// as the entry found.
    Search,
}

/// The slapd configuration: the schemas, TLS, one mdb database of at
/// most `maxsize` bytes, indexed by uid as a directory of users is, and
/// who may see what; `loglevel` goes to syslog.
fn slapd_conf(dir: &Path, maxsize: usize, loglevel: &str) -> String {
    let dir = dir.display();
    format!(
        "include /etc/ldap/schema/core.schema\n\
         include /etc/ldap/schema/cosine.schema\n\
         include /etc/ldap/schema/inetorgperson.schema\n\
         modulepath /usr/lib/ldap\n\
         moduleload back_mdb\n\
         loglevel {loglevel}\n\
         pidfile {dir}/slapd.pid\n\
         TLSCACertificateFile {dir}/ca.pem\n\
         TLSCertificateFile {dir}/server.crt\n\
         TLSCertificateKeyFile {dir}/server.key\n\
         database mdb\n\
         maxsize {maxsize}\n\
         suffix \"{SUFFIX}\"\n\
         directory {dir}/db\n\
         index objectClass eq\n\
         index uid eq\n\
         access to dn.subtree=\"ou=staff,{SUFFIX}\"\n  \
           by dn.exact=\"cn=reader,{SUFFIX}\" read\n  \
           by anonymous auth\n  \
           by * none\n\
         access to attrs=userPassword\n  \
           by anonymous auth\n  \
           by * none\n\
         access to *\n  \
           by * read\n"
    )
}

/// Starts slapd (`$1` the config dir, `$2` its listeners, `$3` what it
/// logs to `slapd.log`) in the foreground of a background job, prints its PID, and waits for stdin
/// to close; then kills slapd (even a stopped one) and removes `$1`. It
/// ignores the terminal's SIGINT and SIGHUP, so that Ctrl-C on a test run
/// still cleans up.
const SUPERVISOR: &str = r#"trap '' INT HUP
slapd -f "$1/slapd.conf" -h "$2" -d "$3" >"$1/slapd.log" 2>&1 </dev/null &
echo "$!"
read -r _
kill -KILL "$!" 2>/dev/null
wait
rm -rf -- "$1"
"#;

/// A running private slapd in a temp dir of its own.
///
/// Dropping it (or the end of the test process, for
/// [`PrivateSlapd::shared`]) kills the server and removes the directory.
pub struct PrivateSlapd {
    dir: PathBuf,
    ldap_port: u16,
    ldaps_port: u16,
    pid: u32,
    passwords: Vec<(User, String)>,
    reader_password: String,
    /// The users of [`PrivateSlapd::start_for_bench`]: uid and password.
    people: Vec<(String, String)>,
    supervisor: Mutex<Option<(Child, ChildStdin)>>,
}

impl PrivateSlapd {
    /// Makes the certificates, the configuration and the database in a new
    /// temp dir and starts slapd; returns once both ports take
    /// connections. Panics with the server's log when it does not come up.
    pub fn start() -> PrivateSlapd {
        PrivateSlapd::launch(Vec::new(), "stats")
    }

    /// [`PrivateSlapd::start`] with `people` (uid and password) in
    /// `ou=people` besides the users of [`User`], and with nothing logged:
    /// a line per operation would measure the log.
    pub fn start_for_bench(people: Vec<(String, String)>) -> PrivateSlapd {
        PrivateSlapd::launch(people, "none")
    }

    fn launch(people: Vec<(String, String)>, log: &str) -> PrivateSlapd {
        require_tools(&[("slapd", "slapd"), ("slapadd", "slapd")]);
        let dir = tempfile::Builder::new()
            .prefix("otpd-slapd.")
            .tempdir_in("/tmp")
            .expect("temp dir for slapd")
            .keep();
        write_certificates(&dir);
        fs::create_dir(dir.join("db")).expect("create db/");
        // 16 MiB, and 2 KiB per entry of `people`: a limit, not an allocation.
        let maxsize = (1 << 24) + 2048 * people.len();
        fs::write(dir.join("slapd.conf"), slapd_conf(&dir, maxsize, log))
            .expect("write slapd.conf");
        let passwords: Vec<(User, String)> =
            User::ALL.iter().map(|u| (*u, random_password())).collect();
        let reader_password = random_password();
        load_entries(&dir, &passwords, &reader_password, &people);
        write_private_file(
            &dir.join("reader.password"),
            &format!("{reader_password}\n"),
        );

        let (ldap_port, ldaps_port) = (free_port(), free_port());
        let listeners = format!("ldap://127.0.0.1:{ldap_port}/ ldaps://127.0.0.1:{ldaps_port}/");
        let mut supervisor = Command::new("sh");
        supervisor.args(["-c", SUPERVISOR, "otpd-slapd"]);
        supervisor.arg(&dir).arg(listeners).arg(log);
        // Its stdout says slapd's PID; closing its stdin ends it. Out of the
        // test's process group: Ctrl-C does not reach it.
        supervisor.stdin(Stdio::piped()).stdout(Stdio::piped());
        let mut child = supervisor
            .process_group(0)
            .spawn()
            .expect("start the slapd supervisor");
        let stdin = child.stdin.take().expect("supervisor stdin");
        let mut pid = String::new();
        BufReader::new(child.stdout.take().expect("supervisor stdout"))
            .read_line(&mut pid)
            .expect("read slapd's PID");
        let server = PrivateSlapd {
            pid: pid.trim().parse().expect("slapd's PID"),
            dir,
            ldap_port,
            ldaps_port,
            passwords,
            reader_password,
            people,
            supervisor: Mutex::new(Some((child, stdin))),
        };
        server.wait_until_listening();
        server
    }

    /// The server of this test process, started on first use and killed
    /// when the process exits. Tests that share it must not stop it.
    pub fn shared() -> &'static PrivateSlapd {
        static SHARED: OnceLock<PrivateSlapd> = OnceLock::new();
        SHARED.get_or_init(PrivateSlapd::start)
    }

    fn wait_until_listening(&self) {
        let deadline = Instant::now() + START_TIMEOUT;
        for port in [self.ldap_port, self.ldaps_port] {
            while TcpStream::connect(("127.0.0.1", port)).is_err() {
                let running = fs::metadata(format!("/proc/{}", self.pid)).is_ok();
                assert!(
                    running && Instant::now() < deadline,
                    "slapd in {} is not listening on port {port} ({}); its log:\n{}",
                    self.dir.display(),
                    if running { "timed out" } else { "it exited" },
                    self.log()
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `ldaps://localhost:PORT`.
    pub fn ldaps_url(&self) -> String {
        format!("ldaps://localhost:{}", self.ldaps_port)
    }

    /// `ldaps://127.0.0.1:PORT`: the URL for clients built on libldap
    /// (FreeRADIUS's rlm_ldap), which checks the certificate of a
    /// `localhost` URL against the machine's host name instead.
    pub fn ldaps_address_url(&self) -> String {
        format!("ldaps://127.0.0.1:{}", self.ldaps_port)
    }

    /// `ldap://localhost:PORT`, where StartTLS is offered.
    pub fn ldap_url(&self) -> String {
        format!("ldap://localhost:{}", self.ldap_port)
    }

    /// The CA certificate (PEM) that signed the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    /// A CA certificate (PEM) that signed nothing this server shows.
    pub fn other_ca_file(&self) -> PathBuf {
        self.dir.join("other-ca.pem")
    }

    /// `user`'s password.
    pub fn password(&self, user: User) -> &str {
        self.passwords
            .iter()
            .find(|(u, _)| *u == user)
            .map(|(_, p)| p.as_str())
            .expect("every user has a password")
    }

    /// Every password of the directory, the reader's included: none may
    /// appear in what the code under test says.
    pub fn all_passwords(&self) -> Vec<&str> {
        let mut all: Vec<&str> = self.passwords.iter().map(|(_, p)| p.as_str()).collect();
        all.extend(self.people.iter().map(|(_, p)| p.as_str()));
        all.push(&self.reader_password);
        all
    }

    /// The `[ldap]` table of an otpd that checks passwords here, over
    /// [`PrivateSlapd::ldaps_address_url`] (what a libldap client must
    /// use, so a benchmark can give both the same), finding the entry in
    /// `ou=people` by `bind`.
    pub fn ldap_table(&self, bind: Bind) -> String {
        let find = match bind {
            Bind::Template => format!("bind_dn = \"uid={{user}},ou=people,{SUFFIX}\"\n"),
            Bind::Search => format!(
                "search_base = \"ou=people,{SUFFIX}\"\nsearch_filter = \"(uid={{user}})\"\n"
            ),
        };
        format!(
            "\n[ldap]\nurl = \"{}\"\nca_file = \"{}\"\n{find}",
            self.ldaps_address_url(),
            self.ca_file().display()
        )
    }

    /// The PID of slapd, whose CPU time a benchmark reads.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The account that may search `ou=staff`.
    pub fn reader_dn(&self) -> String {
        format!("cn=reader,{SUFFIX}")
    }

    /// The reader's password and a newline; root's, mode 0600.
    pub fn reader_password_file(&self) -> PathBuf {
        self.dir.join("reader.password")
    }

    /// Stops slapd with SIGSTOP: it keeps its ports, the kernel still
    /// completes connections, and nothing answers. Until the server is
    /// dropped.
    pub fn freeze(&self) {
        let status = Command::new("kill")
            .args(["-STOP", &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -STOP {}", self.pid);
    }

    /// What slapd logged so far (`-d stats`: connections, operations, DNs,
    /// never passwords).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.join("slapd.log")).unwrap_or_default()
    }
}

impl Drop for PrivateSlapd {
    fn drop(&mut self) {
        let supervisor = self
            .supervisor
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some((mut child, stdin)) = supervisor {
            // Closing stdin sets the supervisor off.
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// 20 random letters and digits.
fn random_password() -> String {
    use rand::distributions::{Alphanumeric, DistString};
    Alphanumeric.sample_string(&mut rand::thread_rng(), 20)
}

/// `password` hashed `{SSHA}` (RFC 2307 style: base64 of the SHA-1 of the
/// password and a random 8-byte salt, then the salt), as slappasswd
/// does; here, since a slappasswd per entry would take minutes for
/// thousands.
fn ssha(password: &str) -> String {
    use rand::RngCore;
    use sha1::{Digest, Sha1};
    let mut salt = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut salt);
    let mut hashed = Sha1::new()
        .chain_update(password.as_bytes())
        .chain_update(salt)
        .finalize()
        .to_vec();
    hashed.extend_from_slice(&salt);
    format!("{{SSHA}}{}", data_encoding::BASE64.encode(&hashed))
}

/// Loads the suffix, the units, the reader, the users and `people` into
/// the database with slapadd, before the server starts.
fn load_entries(
    dir: &Path,
    passwords: &[(User, String)],
    reader_password: &str,
    people: &[(String, String)],
) {
    let mut ldif = format!(
        "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\no: Example\ndc: example\n\n\
         dn: cn=reader,{SUFFIX}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\n\
         cn: reader\nuserPassword: {}\n\n",
        ssha(reader_password)
    );
    for unit in ["people", "partners", "staff"] {
        ldif.push_str(&format!(
            "dn: ou={unit},{SUFFIX}\nobjectClass: organizationalUnit\nou: {unit}\n\n"
        ));
    }
    for (user, password) in passwords {
        let hash = ssha(password);
        for unit in user.units() {
            ldif.push_str(&format!(
                "dn: {}\nobjectClass: inetOrgPerson\nuid: {}\ncn: {unit} user\nsn: user\n\
                 userPassword: {hash}\n\n",
                user_dn(user.uid(), unit),
                user.uid()
            ));
        }
    }
    for (uid, password) in people {
        ldif.push_str(&format!(
            "dn: {}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: bench user\nsn: user\n\
             userPassword: {}\n\n",
            user_dn(uid, "people"),
            ssha(password)
        ));
    }
    let file = dir.join("entries.ldif");
    fs::write(&file, ldif).expect("write entries.ldif");
    let output = run_with_input(
        Command::new("slapadd")
            .arg("-q")
            .arg("-f")
            .arg(dir.join("slapd.conf"))
            .arg("-l")
            .arg(&file),
        "",
    );
    assert!(output.status.success(), "slapadd: {}", describe(&output));
}

/// The CA (`ca.pem`), the server's certificate for `localhost` and
/// 127.0.0.1 that it signed (`server.crt`, `server.key`), and another CA
/// (`other-ca.pem`), in `dir`.
fn write_certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
        KeyUsagePurpose,
    };
    let ca = |name: &str| {
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign];
        CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate")
    };
    let (signer, other) = (ca("otpd slapd test CA"), ca("otpd unrelated CA"));
    let key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .and_then(|params| params.signed_by(&key, &signer))
        .expect("server certificate");
    fs::write(dir.join("ca.pem"), signer.pem()).expect("write ca.pem");
    fs::write(dir.join("other-ca.pem"), other.pem()).expect("write other-ca.pem");
    fs::write(dir.join("server.crt"), server.pem()).expect("write server.crt");
    write_private_file(&dir.join("server.key"), &key.serialize_pem());
}
