//! `atrest scope ...` and `atrest app ...` against the real `atrest keyd`
//! binary serving HTTPS on 127.0.0.1: an operator adds an app and scopes
//! from the CLI, the app seals and opens fields with its own token, and
//! a shred from the CLI ends that scope.

use std::os::unix::fs::PermissionsExt;

use serde_json::{Value, json};

use crate::common::atrest;
use crate::keyd::Keyd;

/// `atrest ARGS` against `keyd`'s data directory.
fn cli(keyd: &Keyd, args: &[&str]) -> std::process::Output {
    atrest()
        .args(args)
        .env("ATREST_KEYD_DIR", &keyd.data)
        .output()
        .unwrap()
}

fn cli_ok(keyd: &Keyd, args: &[&str]) -> String {
    let out = cli(keyd, args);
    assert!(
        out.status.success(),
        "atrest {args:?}: {}{}",
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn operators_manage_scopes_and_apps_from_the_cli() {
    let keyd = Keyd::start();
    let mode = std::fs::metadata(keyd.data.join("records.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o777,
        0o600,
        "the records key is for keyd's eyes only"
    );
    assert!(cli_ok(&keyd, &["app", "list"]).contains("no apps yet"));

    let added: Value = serde_json::from_str(&cli_ok(
        &keyd,
        &[
            "app",
            "add",
            "web",
            "--scope",
            "user:*,notify:*",
            "--field",
            "users.*",
            "--json",
        ],
    ))
    .unwrap();
    let token = added["token"].as_str().unwrap().to_owned();
    assert_eq!(
        added["operations"],
        serde_json::json!(["encrypt", "decrypt", "rewrap", "index", "datakey"]),
        "every operation unless limited"
    );
    cli_ok(
        &keyd,
        &[
            "app",
            "add",
            "signup",
            "--scope",
            "user:*",
            "--field",
            "users.*",
            "--operation",
            "encrypt,index",
        ],
    );
    let listed = cli_ok(&keyd, &["app", "list"]);
    assert!(
        listed.contains("web") && !listed.contains(&token),
        "{listed}"
    );
    assert!(listed.contains("operations: encrypt,index"), "{listed}");

    let created: Value = serde_json::from_str(&cli_ok(
        &keyd,
        &["scope", "create", "user:1", "--client-share", "--json"],
    ))
    .unwrap();
    let share = created["client_share_secret"].as_str().unwrap().to_owned();
    assert!(!cli_ok(&keyd, &["scope", "show", "user:1", "--json"]).contains(&share));
    cli_ok(&keyd, &["scope", "create", "notify:1"]);
    cli_ok(
        &keyd,
        &[
            "scope",
            "window",
            "set",
            "notify:1",
            "--start",
            "02:00",
            "--end",
            "03:00",
            "--field",
            "users.email",
        ],
    );
    let bad = cli(
        &keyd,
        &[
            "scope",
            "window",
            "set",
            "notify:1",
            "--start",
            "2am",
            "--end",
            "03:00",
            "--field",
            "users.email",
        ],
    );
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid_window"));

    // The app, with its own token, over HTTPS.
    let client = keyd.client();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let call = |path: &str, value: &str| {
        let body = json!({ "items": [{ "scope": "user:1", "table": "users", "column": "email",
                                        "row": "r1", "value": value, "client_share": share }] });
        let request = client
            .http
            .post(format!("{}{path}", client.base))
            .bearer_auth(&token)
            .json(&body);
        rt.block_on(async {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        })
    };
    let (status, sealed) = call("/v1/scoped/encrypt", "one@example.org");
    assert_eq!(status, 200, "{sealed}");
    let envelope = sealed["values"][0].as_str().unwrap().to_owned();
    let (status, opened) = call("/v1/scoped/decrypt", &envelope);
    assert_eq!(
        (status, &opened["values"][0]),
        (200, &json!("one@example.org"))
    );

    cli_ok(&keyd, &["scope", "rotate", "user:1"]);
    let shown: Value =
        serde_json::from_str(&cli_ok(&keyd, &["scope", "show", "user:1", "--json"])).unwrap();
    assert_eq!(shown["versions"], json!([1, 2]));
    assert!(cli_ok(&keyd, &["scope", "list"]).contains("notify:1"));

    let refused = cli(&keyd, &["scope", "shred", "user:1"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--yes"));
    cli_ok(&keyd, &["scope", "shred", "user:1", "--yes"]);
    let (status, gone) = call("/v1/scoped/decrypt", &envelope);
    assert_eq!(
        (status, gone["error"].as_str()),
        (410, Some("scope_shredded"))
    );

    let unknown = cli(&keyd, &["scope", "show", "user:nobody"]);
    assert!(!unknown.status.success());
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("unknown_scope"));

    cli_ok(&keyd, &["app", "remove", "web"]);
    let (status, body) = call("/v1/scoped/decrypt", &envelope);
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("bad_app_token"))
    );

    // Every step is in the log, and the log verifies.
    let tail = keyd.cli_ok(&["audit", "tail", "-n", "1000", "--json"]);
    assert!(
        tail.contains("decrypted") && tail.contains("scope_shredded"),
        "{tail}"
    );
    assert!(keyd.cli_ok(&["audit", "verify"]).contains("intact"));
}
