//! Several otpd nodes on one PostgreSQL database: a [`Cluster`] is a
//! database of the shared private server, one key file for every node, and
//! the `[store]` table that points a node at them. Each node is a
//! [`TestEnv`] of its own (its own socket, page, mail server and RADIUS
//! port), as each would be on its own machine.

use std::fs;
use std::path::{Path, PathBuf};

use rand::RngCore;

use crate::postgres::{Database, PrivatePostgres};
use crate::{free_port, EnvOptions, TestEnv};

/// A database for a cluster and the key every node holds.
pub struct Cluster {
    pub db: Database,
    /// 32 random bytes (mode 0600), written before any node starts, as an
    /// operator distributes it.
    pub key_file: PathBuf,
    dir: tempfile::TempDir,
}

impl Cluster {
    /// A fresh database `name` on `pg` and a fresh key file.
    pub fn new(pg: &PrivatePostgres, name: &str) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("otpd-cluster-")
            .tempdir()
            .expect("temp dir");
        let key_file = dir.path().join("otpd.key");
        let mut key = [0u8; 32];
        rand::thread_rng().fill_bytes(&mut key);
        fs::write(&key_file, key).expect("key file");
        fs::set_permissions(
            &key_file,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .expect("chmod key");
        Cluster {
            db: pg.create_database(name),
            key_file,
            dir,
        }
    }

    /// A directory for files of the test beside the cluster's.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The `[store]` table of a node: over TLS (verify-full, password file)
    /// when `tls`, else over the server's Unix socket.
    pub fn store_toml(&self, tls: bool) -> String {
        let (url, password) = if tls {
            (
                self.db.tls_url.clone(),
                format!("password_file = \"{}\"\n", self.db.password_file.display()),
            )
        } else {
            (self.db.socket_url.clone(), String::new())
        };
        format!(
            "\n[store]\nbackend = \"postgresql\"\nurl = \"{url}\"\n{password}\
             key_file = \"{}\"\npool_size = 4\ntimeout_ms = 2000\n",
            self.key_file.display()
        )
    }

    /// A node: a [`TestEnv`] on the cluster's store, with `extra` TOML
    /// tables (see [`radius_toml`]).
    pub fn node(&self, tls: bool, extra: &str) -> TestEnv {
        TestEnv::start_with(EnvOptions {
            extra_toml: format!("{}{extra}", self.store_toml(tls)),
            ..EnvOptions::default()
        })
    }

    /// A node that also answers RADIUS for the client 127.0.0.1 with
    /// `secret`; its RADIUS port comes back too.
    pub fn radius_node(&self, tls: bool, secret: &str) -> (TestEnv, u16) {
        let port = free_port();
        (self.node(tls, &radius_toml(port, "gw", secret)), port)
    }
}

/// A `[radius]` table listening on 127.0.0.1:`port` for one client at
/// 127.0.0.1 named `client` with `secret`, Message-Authenticator required.
pub fn radius_toml(port: u16, client: &str, secret: &str) -> String {
    format!(
        "\n[radius]\nlisten = \"127.0.0.1:{port}\"\nrequire_message_authenticator = true\n\n\
         [[radius.client]]\nname = \"{client}\"\naddress = \"127.0.0.1/32\"\nsecret = \"{secret}\"\n"
    )
}
