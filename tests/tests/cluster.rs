//! Three otpd nodes on one PostgreSQL database (one private server for the
//! whole binary): what one node decides, every node sees. The same code sent
//! to all three at once over the socket and RADIUS is accepted once;
//! failures spread over the nodes lock the token on all; an enrolment
//! issued on one node is activated on the second's page, confirmed on the
//! third's and logs in through pamtester and radclient on two of them; a
//! host without a node logs in over RADIUS while a node is down.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;
use std::sync::Barrier;

use e2e::cluster::Cluster;
use e2e::postgres::PrivatePostgres;
use e2e::{
    assert_success, describe, now_unix, oathtool_code_at, pamtester, require_root_and_peers,
    run_with_input, stdout, PamService, TestEnv,
};
use serde_json::{json, Value};

const SECRET: &str = "e2e-cluster-radius-secret";
/// A token secret of the imported users (base32, 160 bits).
const TOKEN: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

/// Starts three RADIUS nodes at the same moment on a fresh database: the
/// first over TLS (verify-full, password file), the others over the Unix
/// socket. The schema must be migrated once, whoever wins.
fn three_nodes(pg: &PrivatePostgres, name: &str) -> (Cluster, Vec<(TestEnv, u16)>) {
    let cluster = Cluster::new(pg, name);
    let start = Barrier::new(3);
    let nodes = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..3)
            .map(|i| {
                let (cluster, start) = (&cluster, &start);
                scope.spawn(move || {
                    start.wait();
                    cluster.radius_node(i == 0, SECRET)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("node"))
            .collect::<Vec<_>>()
    });
    assert_eq!(
        pg.psql(&cluster.db.name, "SELECT count(*) FROM schema_version"),
        "1",
        "one schema version row after three nodes started at once"
    );
    (cluster, nodes)
}

/// Imports active 60-second tokens with the secret [`TOKEN`] for `users`
/// through `node`'s otpctl.
fn import(node: &TestEnv, users: &[&str]) {
    let csv: String = users.iter().map(|u| format!("{u},{TOKEN},60\n")).collect();
    let path = node.root().join("import.csv");
    std::fs::write(&path, csv).expect("csv");
    let output = node.otpctl(
        &[
            "import",
            "--format",
            "csv",
            "--json",
            path.to_str().expect("utf-8"),
        ],
        "",
    );
    assert_success(&output, "otpctl import");
}

/// One verify request over `node`'s socket: "accept", "reject" or "error".
fn verify(node: &TestEnv, user: &str, otp: &str) -> String {
    let answer = node.socket_request(&json!({
        "op": "verify", "user": user, "otp": otp, "service": "cluster",
    }));
    answer["result"].as_str().unwrap_or("?").to_owned()
}

/// `radclient` sending `count` PAP requests for `user` with `code` to
/// 127.0.0.1:`port`, all in flight at once; how many were accepted.
fn radclient_accepts(port: u16, user: &str, code: &str, count: usize) -> usize {
    let request = format!(
        "User-Name = \"{user}\"\nUser-Password = \"{code}\"\nMessage-Authenticator = 0x00\n"
    );
    let input = vec![request; count].join("\n");
    let output = run_with_input(
        Command::new("radclient")
            .args(["-r", "1", "-t", "10", "-p"])
            .arg(count.to_string())
            .arg(format!("127.0.0.1:{port}"))
            .args(["auth", SECRET]),
        &input,
    );
    let text = stdout(&output);
    let accepted = text.matches("Access-Accept").count();
    let rejected = text.matches("Access-Reject").count();
    assert_eq!(
        accepted + rejected,
        count,
        "every request answered: {}",
        describe(&output)
    );
    accepted
}

/// Counts of the audit trail of `user` by result and reason.
fn audit_counts(pg: &PrivatePostgres, db: &str, user: &str) -> String {
    pg.psql(
        db,
        &format!(
            "SELECT string_agg(result || ':' || reason || '=' || n, ',' ORDER BY result, reason) \
             FROM (SELECT result, reason, count(*) AS n FROM audit WHERE username = '{user}' \
             GROUP BY result, reason) c"
        ),
    )
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn the_same_code_at_three_nodes_at_once_is_accepted_once() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let (cluster, nodes) = three_nodes(pg, "cluster_replay");
    import(&nodes[0].0, &["alice"]);
    let code = oathtool_code_at(TOKEN, 60, now_unix());
    // 3 nodes x (20 socket clients + one radclient with 15 requests in
    // flight) = 105 attempts with one code, released together.
    let (sockets, radius) = (20, 15);
    let start = Barrier::new(nodes.len() * (sockets + 1));
    let accepted: usize = std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for (node, port) in &nodes {
            for _ in 0..sockets {
                let (code, start) = (&code, &start);
                handles.push(scope.spawn(move || {
                    start.wait();
                    usize::from(verify(node, "alice", code) == "accept")
                }));
            }
            let (code, start, port) = (&code, &start, *port);
            handles.push(scope.spawn(move || {
                start.wait();
                radclient_accepts(port, "alice", code, radius)
            }));
        }
        handles.into_iter().map(|h| h.join().expect("client")).sum()
    });
    let attempts = nodes.len() * (sockets + radius);
    assert_eq!(accepted, 1, "one accept among {attempts} attempts");
    assert_eq!(
        pg.psql(
            &cluster.db.name,
            "SELECT count(*) FILTER (WHERE result = 'ok'), count(*) FILTER (WHERE result = 'fail') \
             FROM audit WHERE username = 'alice' AND channel IN ('pam', 'radius')"
        ),
        format!("1|{}", attempts - 1),
        "every attempt audited once, on whichever node took it: {}",
        audit_counts(pg, &cluster.db.name, "alice")
    );
    // Every node, asked afterwards, sees the code as used.
    for (node, _) in &nodes {
        assert_eq!(verify(node, "alice", &code), "reject");
    }
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn failures_spread_over_the_nodes_lock_the_token_on_all() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let (_cluster, nodes) = three_nodes(pg, "cluster_lockout");
    import(&nodes[1].0, &["bob"]);
    let now = now_unix();
    let valid: Vec<String> = [now - 60, now, now + 60]
        .iter()
        .map(|t| oathtool_code_at(TOKEN, 60, *t))
        .collect();
    let wrong: Vec<String> = (0..1_000_000u32)
        .map(|n| format!("{:06}", n * 7919 % 1_000_000))
        .filter(|c| !valid.contains(c))
        .take(5)
        .collect();
    // Five different wrong codes (the default max_failures), round robin.
    for (i, code) in wrong.iter().enumerate() {
        let node = &nodes[i % 3].0;
        assert_eq!(verify(node, "bob", code), "reject", "wrong code {i}");
    }
    let current = oathtool_code_at(TOKEN, 60, now_unix());
    for (node, _) in &nodes {
        assert_eq!(
            verify(node, "bob", &current),
            "reject",
            "locked on every node"
        );
        let shown = node.show("bob");
        assert!(
            shown["locked_until"].is_string(),
            "otpctl show on every node sees the lock: {shown}"
        );
    }
    let unlocked = nodes[2].0.otpctl(&["unlock", "bob"], "");
    assert_success(&unlocked, "otpctl unlock on the third node");
    assert_eq!(
        verify(&nodes[0].0, "bob", &current),
        "accept",
        "unlocked everywhere by one node"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn enrolment_across_three_nodes_logs_in_through_pamtester_and_radclient() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let (_cluster, nodes) = three_nodes(pg, "cluster_enrol");
    let (a, b, c) = (&nodes[0].0, &nodes[1].0, &nodes[2].0);
    let issued = a.issue("carol", "carol@example.jp", "4321");
    let token = b.activate_ok(&issued.user_id, "4321");
    // Confirmed with the previous step's code: the current and the next
    // step's codes stay unused for the logins below.
    let previous = oathtool_code_at(&token.secret, 60, now_unix() - 60);
    let (status, confirmed): (u16, Value) = c.confirm_api(&issued.user_id, &previous);
    assert_eq!(status, 200, "confirmation on the third node: {confirmed}");
    assert_eq!(a.show("carol")["state"], "active");

    let pam = PamService::new(&format!("socket={}", a.socket_path().display()), &[]);
    let current = oathtool_code_at(&token.secret, 60, now_unix());
    let login = pam.authenticate("carol", &format!("{current}\n"));
    assert!(
        login.status.success(),
        "pamtester through the first node: {}\n{}",
        describe(&login),
        a.otpd_log()
    );
    let next = oathtool_code_at(&token.secret, 60, now_unix() + 60);
    assert_eq!(
        radclient_accepts(nodes[1].1, "carol", &next, 1),
        1,
        "radclient through the second node"
    );
    assert_eq!(
        radclient_accepts(nodes[2].1, "carol", &current, 1),
        0,
        "the code used through the first node is a replay on the third"
    );
}

#[test]
#[ignore = "end-to-end: needs root and the real peers; run tests/run-all.sh"]
fn pam_on_a_host_without_a_node_logs_in_through_the_cluster_with_a_node_down() {
    require_root_and_peers();
    let pg = PrivatePostgres::shared();
    let (cluster, mut nodes) = three_nodes(pg, "cluster_remote_pam");
    import(&nodes[1].0, &["dave"]);
    // The host holds a RADIUS secret only: no socket, no database, no key.
    let secret_file = cluster.dir().join("radius.secret");
    e2e::write_private_file(&secret_file, &format!("{SECRET}\n"));
    let (first, second) = (nodes[0].1, nodes[1].1);
    let pam = PamService::new(
        &format!(
            "radius=127.0.0.1:{first},127.0.0.1:{second} secret_file={} timeout_ms=1000",
            secret_file.display()
        ),
        &[],
    );
    nodes[0].0.kill_otpd_9();
    let code = oathtool_code_at(TOKEN, 60, now_unix());
    let login = pam.authenticate("dave", &format!("{code}\n"));
    assert!(
        pamtester::ended_with(&login, pamtester::SUCCESS),
        "the second node answers for the first: {}\n{}",
        describe(&login),
        nodes[1].0.otpd_log()
    );
    let replay = pam.authenticate("dave", &format!("{code}\n"));
    assert!(
        pamtester::ended_with(&replay, pamtester::AUTH_ERR),
        "the same code again: {}",
        describe(&replay)
    );
    nodes[1].0.kill_otpd_9();
    let started = std::time::Instant::now();
    let down = pam.authenticate("dave", &format!("{code}\n"));
    let took = started.elapsed();
    assert!(
        pamtester::ended_with(&down, pamtester::AUTHINFO_UNAVAIL),
        "no node answering: {}",
        describe(&down)
    );
    assert!(
        took < std::time::Duration::from_secs(10),
        "both nodes down answered within the deadlines: {took:?}"
    );
}
