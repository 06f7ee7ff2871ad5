// The scoped API's suite, included once per backend by `scoped.rs`
// (which defines `BACKEND`).

use std::sync::Arc;

use atrest_audit::{AuditStore, LogOptions};
use atrest_keyd::{AuthorityOptions, Storage};
use atrest_keyd::testing::{ManualClock, Served, TestKeyd};
use atrest_scoped::{FieldContext, Keyring, ScopeId, ScopeKey, Wrapped};
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{ADMIN_TOKEN, Reply};

/// A keyd serving the scoped API on a loopback port, on a clock the test
/// moves, with a records key the test knows (to play the attacker who has
/// the data directory).
struct Api {
    keyd: TestKeyd<ManualClock>,
    served: Served,
    client: reqwest::Client,
}

impl Api {
    async fn start() -> Option<Self> {
        Self::start_with(AuthorityOptions::default()).await
    }

    /// With `options`, apart from the records key and the refusal budget.
    async fn start_with(options: AuthorityOptions) -> Option<Self> {
        let keyd = TestKeyd::open_on(
            BACKEND,
            ManualClock::now(),
            AuthorityOptions {
                refusal_entries_per_second: 100_000,
                scoped: true,
                ..options
            },
            LogOptions::default(),
        )
        .await?;
        let served = keyd.serve(Some(ADMIN_TOKEN)).await;
        Some(Self {
            keyd,
            served,
            client: reqwest::Client::new(),
        })
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.served.base)
    }

    async fn admin(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(ADMIN_TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        Reply::read(request.send().await.unwrap()).await
    }

    async fn call(&self, token: &str, path: &str, body: &Value) -> Reply {
        Reply::read(
            self.client
                .post(self.url(path))
                .bearer_auth(token)
                .json(body)
                .send()
                .await
                .unwrap(),
        )
        .await
    }

    /// Adds an app with this policy; its token.
    async fn app(&self, name: &str, scopes: &[&str], fields: &[&str]) -> String {
        let reply = self
            .admin(
                Method::POST,
                "/v1/admin/apps",
                Some(json!({
                    "name": name, "scopes": scopes, "fields": fields, "create_scopes": true
                })),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        let token = reply.json["token"].as_str().unwrap().to_owned();
        assert!(token.starts_with("atrapp_"));
        token
    }

    /// Creates a scope as the app; its client share if it takes one.
    async fn scope(&self, token: &str, scope: &str, share: bool) -> Option<String> {
        let reply = self
            .call(
                token,
                "/v1/scoped/scopes",
                &json!({ "scope": scope, "client_share": share }),
            )
            .await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["versions"], json!([1]));
        reply.json["client_share_secret"].as_str().map(str::to_owned)
    }

    async fn values(&self, token: &str, op: &str, items: Value) -> Vec<String> {
        let reply = self
            .call(token, &format!("/v1/scoped/{op}"), &json!({ "items": items }))
            .await;
        assert_eq!(reply.status, 200, "{op}: {}", reply.text);
        reply.json["values"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    }

    /// Every audit entry's details, with its subject.
    async fn audit(&self) -> Vec<(Option<String>, Value)> {
        self.keyd
            .authority
            .audit()
            .store()
            .read_entries(1, 1_000_000)
            .await
            .unwrap()
            .iter()
            .map(|e| (e.subject.clone(), e.details_value().unwrap()))
            .collect()
    }

    /// Items audited as decrypted, and refusals audited with `code`.
    async fn audited(&self, code: &str) -> (usize, usize) {
        let entries = self.audit().await;
        let decrypted = entries
            .iter()
            .filter(|(_, d)| d["scoped"] == "decrypt" && d["outcome"] == "decrypted")
            .map(|(_, d)| d["items"].as_array().unwrap().len())
            .sum();
        let refused = entries.iter().filter(|(_, d)| d["outcome"] == code).count();
        (decrypted, refused)
    }
}

fn item(scope: &str, column: &str, row: &str, value: &str, share: Option<&str>) -> Value {
    let mut item = json!({
        "scope": scope, "table": "users", "column": column, "row": row, "value": value
    });
    if let Some(share) = share {
        item["client_share"] = json!(share);
    }
    item
}

#[tokio::test]
async fn fields_round_trip_and_stay_bound_to_their_row_and_scope() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    let alice = api.scope(&web, "user:alice", true).await.unwrap();
    let bob = api.scope(&web, "user:bob", true).await.unwrap();
    assert!(alice.starts_with("atrcs:"));

    let sealed = api
        .values(
            &web,
            "encrypt",
            json!([
                item("user:alice", "email", "r1", "alice@example.org", Some(&alice)),
                item("user:alice", "name", "r1", "Alice", Some(&alice)),
            ]),
        )
        .await;
    assert!(sealed.iter().all(|s| s.starts_with("atrf:")));
    let opened = api
        .values(
            &web,
            "decrypt",
            json!([
                item("user:alice", "email", "r1", &sealed[0], Some(&alice)),
                item("user:alice", "name", "r1", &sealed[1], Some(&alice)),
            ]),
        )
        .await;
    assert_eq!(opened, ["alice@example.org", "Alice"]);

    // Moved to another row, another column, another scope: refused.
    for moved in [
        item("user:alice", "email", "r2", &sealed[0], Some(&alice)),
        item("user:alice", "name", "r1", &sealed[0], Some(&alice)),
        item("user:bob", "email", "r1", &sealed[0], Some(&bob)),
    ] {
        api.call(&web, "/v1/scoped/decrypt", &json!({ "items": [moved] }))
            .await
            .assert_refused(400, "authentication_failed");
    }
    // Without the share, or with another's, the scope does not open.
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [item("user:alice", "email", "r1", &sealed[0], None)] }),
    )
    .await
    .assert_refused(403, "client_share_required");
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [item("user:alice", "email", "r1", &sealed[0], Some(&bob))] }),
    )
    .await
    .assert_refused(400, "authentication_failed");

    // Blind indexes: equal after normalisation, different per scope.
    let index = |scope: &str, share: &str, value: &str| {
        json!({
            "scope": scope, "table": "users", "index": "email_idx", "columns": ["email"],
            "bits": 32, "normalize": ["trim", "lowercase"], "values": [value],
            "client_share": share
        })
    };
    let values = api
        .values(
            &web,
            "index",
            json!([
                index("user:alice", &alice, "Alice@Example.org "),
                index("user:alice", &alice, "alice@example.org"),
                index("user:bob", &bob, "alice@example.org"),
            ]),
        )
        .await;
    assert_eq!(values[0], values[1]);
    assert_ne!(values[0], values[2]);
    assert_eq!(values[0].len(), 8);

    let (decrypted, _) = api.audited("-").await;
    assert_eq!(decrypted, 2, "every decrypted field is in the log");
}

#[tokio::test]
async fn without_the_client_share_the_database_and_records_key_do_not_decrypt() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    let share = api.scope(&web, "user:carol", true).await.unwrap();
    let sealed = api
        .values(
            &web,
            "encrypt",
            json!([item("user:carol", "email", "r9", "carol@example.org", Some(&share))]),
        )
        .await;

    // The attacker holds the database and the data directory (records
    // key): the wrapped secret opens, the scope key does not.
    let stored = api
        .keyd
        .authority
        .storage()
        .scope("user:carol")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.needs_client_share);
    let scope = ScopeId::new("user:carol").unwrap();
    let records = api
        .keyd
        .authority
        .scope_wrapping_key("user:carol")
        .await
        .unwrap();
    let unwrapped = records
        .unwrap_scope(&scope, &Wrapped::from_bytes(&stored.keys[0].1).unwrap())
        .unwrap();
    assert_eq!(
        ScopeKey::open(&unwrapped, None).unwrap_err().code(),
        "client_share_required"
    );
    // With any share but the client's, the key is another: nothing opens.
    let ctx = FieldContext::new("users", "email", "r9").unwrap();
    let guess = atrest_scoped::ClientShare::random();
    let ring = Keyring::new(ScopeKey::open(&unwrapped, Some(&guess)).unwrap());
    assert_eq!(
        ring.decrypt_field(&ctx, &sealed[0]).unwrap_err().code(),
        "authentication_failed"
    );
    // The client's share, given back, opens it: the test is not vacuous.
    let share = atrest_scoped::ClientShare::from_text(&share).unwrap();
    let ring = Keyring::new(ScopeKey::open(&unwrapped, Some(&share)).unwrap());
    assert_eq!(&ring.decrypt_field(&ctx, &sealed[0]).unwrap()[..], b"carol@example.org");
}

#[tokio::test]
async fn a_window_opens_its_fields_only_inside_it_and_refusals_are_audited() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api
        .app("web", &["user:*", "notify:*"], &["users.*"])
        .await;
    let nightly = api.app("nightly", &["notify:*"], &["users.email"]).await;
    assert!(api.scope(&web, "notify:dave", false).await.is_none());
    let sealed = api
        .values(
            &web,
            "encrypt",
            json!([
                item("notify:dave", "email", "r1", "dave@example.org", None),
                item("notify:dave", "phone", "r1", "+1 555 0100", None),
            ]),
        )
        .await;
    // A window that opens an hour from now, for an hour.
    let minute = (api.keyd.clock.secs() / 60) % 1440;
    let hhmm = |m: u64| format!("{:02}:{:02}", (m % 1440) / 60, m % 60);
    let reply = api
        .admin(
            Method::PUT,
            "/v1/admin/scope/window",
            Some(json!({
                "scope": "notify:dave",
                "window": { "start": hhmm(minute + 60), "end": hhmm(minute + 120),
                            "fields": ["users.email"] }
            })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["window"]["fields"], json!(["users.email"]));

    let email = json!({ "items": [item("notify:dave", "email", "r1", &sealed[0], None)] });
    api.call(&nightly, "/v1/scoped/decrypt", &email)
        .await
        .assert_refused(403, "outside_window");
    let (_, refused) = api.audited("outside_window").await;
    assert_eq!(refused, 1, "the refusal is in the log");

    api.keyd.clock.advance(61 * 60);
    let opened = api.values(&nightly, "decrypt", email["items"].clone()).await;
    assert_eq!(opened, ["dave@example.org"]);
    // A field the window does not name stays shut (also for an app whose
    // policy would allow it).
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [item("notify:dave", "phone", "r1", &sealed[1], None)] }),
    )
    .await
    .assert_refused(403, "not_allowed");
    // A share scope takes no window: its owner's request is what opens it.
    api.scope(&web, "user:erin", true).await.unwrap();
    api.admin(
        Method::PUT,
        "/v1/admin/scope/window",
        Some(json!({ "scope": "user:erin",
                     "window": { "start": "02:00", "end": "03:00", "fields": ["users.email"] } })),
    )
    .await
    .assert_refused(400, "invalid_request");
    let (decrypted, _) = api.audited("-").await;
    assert_eq!(decrypted, 1);
}

#[tokio::test]
async fn an_app_uses_only_what_its_policy_names() {
    let Some(api) = Api::start().await else {
        return;
    };
    let a = api.app("app-a", &["user:*"], &["users.*"]).await;
    let b = api.app("app-b", &["org:*"], &["users.email"]).await;
    api.scope(&b, "org:acme", false).await;
    let sealed = api
        .values(
            &b,
            "encrypt",
            json!([item("org:acme", "email", "r1", "ceo@acme.example", None)]),
        )
        .await;
    let theirs = json!({ "items": [item("org:acme", "email", "r1", &sealed[0], None)] });
    api.call(&a, "/v1/scoped/decrypt", &theirs)
        .await
        .assert_refused(403, "not_allowed");
    api.call(&a, "/v1/scoped/scopes", &json!({ "scope": "org:evil", "client_share": false }))
        .await
        .assert_refused(403, "not_allowed");
    // A field outside b's policy.
    api.call(
        &b,
        "/v1/scoped/encrypt",
        &json!({ "items": [item("org:acme", "name", "r1", "x", None)] }),
    )
    .await
    .assert_refused(403, "not_allowed");
    let (_, refused) = api.audited("not_allowed").await;
    assert!(refused >= 2, "refusals of known apps are audited");

    // No token, a wrong one, a removed app's.
    Reply::read(
        api.client
            .post(api.url("/v1/scoped/decrypt"))
            .json(&theirs)
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_refused(401, "bad_app_token");
    api.call("atrapp_nope", "/v1/scoped/decrypt", &theirs)
        .await
        .assert_refused(401, "bad_app_token");
    let listed = api.admin(Method::GET, "/v1/admin/apps", None).await;
    assert_eq!(listed.json.as_array().unwrap().len(), 2);
    assert!(!listed.text.contains("atrapp_"), "tokens are never listed");
    let removed = api.admin(Method::DELETE, "/v1/admin/apps/app-b", None).await;
    assert_eq!(removed.status, 200, "{}", removed.text);
    assert_eq!(removed.json["removed"], "app-b");
    api.call(&b, "/v1/scoped/decrypt", &theirs)
        .await
        .assert_refused(401, "bad_app_token");
    // App routes refuse the admin token, admin routes an app's.
    api.call(ADMIN_TOKEN, "/v1/scoped/decrypt", &theirs)
        .await
        .assert_refused(401, "bad_app_token");
    Reply::read(
        api.client
            .get(api.url("/v1/admin/scopes"))
            .bearer_auth(&a)
            .send()
            .await
            .unwrap(),
    )
    .await
    .assert_refused(401, "unauthorized");
}

#[tokio::test]
async fn hostile_inputs_get_stable_client_errors() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    api.scope(&web, "user:f", false).await;
    let raw = |body: Vec<u8>| {
        let request = api
            .client
            .post(api.url("/v1/scoped/decrypt"))
            .bearer_auth(&web)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body);
        async move { Reply::read(request.send().await.unwrap()).await }
    };
    raw(b"{not json".to_vec())
        .await
        .assert_refused(400, "malformed_request");
    raw(br#"{"items": 7}"#.to_vec())
        .await
        .assert_refused(400, "malformed_request");
    raw(br#"{"items": [{"scope": 1}]}"#.to_vec())
        .await
        .assert_refused(400, "malformed_request");
    raw(br#"{"items": [], "extra": true}"#.to_vec())
        .await
        .assert_refused(400, "malformed_request");
    raw(vec![b' '; 2 * 1024 * 1024])
        .await
        .assert_refused(413, "body_too_large");
    let call = |items: Value| {
        let body = json!({ "items": items });
        let web = web.clone();
        let api = &api;
        async move { api.call(&web, "/v1/scoped/decrypt", &body).await }
    };
    call(json!([])).await.assert_refused(400, "invalid_request");
    let many: Vec<Value> = (0..1001)
        .map(|i| item("user:f", "email", &i.to_string(), "atrf:AAAA", None))
        .collect();
    call(json!(many)).await.assert_refused(400, "invalid_request");
    call(json!([item("user:nobody", "email", "r", "atrf:AAAA", None)]))
        .await
        .assert_refused(404, "unknown_scope");
    call(json!([item("user:f", "email", "r", "atrf:!!", None)]))
        .await
        .assert_refused(400, "malformed");
    call(json!([item("user:f", "email", "r", "plain", None)]))
        .await
        .assert_refused(400, "malformed");
    call(json!([item("user:f", "email", "", "atrf:AAAA", None)]))
        .await
        .assert_refused(400, "invalid_name");
    call(json!([item("user:f", "email", "r", "atrf:AAAA", Some("atrcs:short"))]))
        .await
        .assert_refused(400, "malformed");
    api.call(
        &web,
        "/v1/scoped/index",
        &json!({ "items": [{ "scope": "user:f", "table": "users", "index": "i",
                             "columns": ["email"], "bits": 0, "values": ["x"] }] }),
    )
    .await
    .assert_refused(400, "invalid_index");
    // Data keys: no value, at most 1,000, named fields only.
    let key_item = |column: &str, row: &str| {
        json!({ "scope": "user:f", "table": "users", "column": column, "row": row })
    };
    let data_keys = |items: Value| {
        let body = json!({ "items": items });
        let web = web.clone();
        let api = &api;
        async move { api.call(&web, "/v1/scoped/datakey", &body).await }
    };
    let mut valued = key_item("key", "r");
    valued["value"] = json!("x");
    data_keys(json!([valued]))
        .await
        .assert_refused(400, "malformed_request");
    let many: Vec<Value> = (0..1001).map(|i| key_item("key", &i.to_string())).collect();
    data_keys(json!(many))
        .await
        .assert_refused(400, "invalid_request");
    data_keys(json!([key_item("key", "")]))
        .await
        .assert_refused(400, "invalid_name");
    data_keys(json!([key_item("#file", "r")]))
        .await
        .assert_refused(400, "invalid_name");
    // Admin inputs too.
    api.admin(
        Method::POST,
        "/v1/admin/apps",
        Some(json!({ "name": "bad name", "scopes": ["x"], "fields": ["t.c"] })),
    )
    .await
    .assert_refused(400, "invalid_request");
    api.admin(
        Method::POST,
        "/v1/admin/apps",
        Some(json!({ "name": "web", "scopes": ["x"], "fields": ["t.c"] })),
    )
    .await
    .assert_refused(409, "app_exists");
    api.admin(
        Method::PUT,
        "/v1/admin/scope/window",
        Some(json!({ "scope": "user:f",
                     "window": { "start": "25:00", "end": "03:00", "fields": ["users.email"] } })),
    )
    .await
    .assert_refused(400, "invalid_window");
    api.admin(
        Method::POST,
        "/v1/admin/scopes",
        Some(json!({ "scope": "user:f", "client_share": false })),
    )
    .await
    .assert_refused(409, "scope_exists");
}

#[tokio::test]
async fn a_shredded_scope_never_decrypts_and_others_are_untouched() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    api.scope(&web, "user:gone", false).await;
    api.scope(&web, "user:kept", false).await;
    let sealed = api
        .values(
            &web,
            "encrypt",
            json!([
                item("user:gone", "email", "r1", "gone@example.org", None),
                item("user:kept", "email", "r2", "kept@example.org", None),
            ]),
        )
        .await;
    let reply = api
        .admin(Method::POST, "/v1/admin/scope/shred", Some(json!({ "scope": "user:gone" })))
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["shredded"], json!(true));
    assert_eq!(reply.json["versions"], json!([]));
    let stored = api
        .keyd
        .authority
        .storage()
        .scope("user:gone")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.keys.is_empty(), "no wrapped key is left");
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [item("user:gone", "email", "r1", &sealed[0], None)] }),
    )
    .await
    .assert_refused(410, "scope_shredded");
    api.call(
        &web,
        "/v1/scoped/encrypt",
        &json!({ "items": [item("user:gone", "email", "r1", "again", None)] }),
    )
    .await
    .assert_refused(410, "scope_shredded");
    api.admin(
        Method::POST,
        "/v1/admin/scopes",
        Some(json!({ "scope": "user:gone", "client_share": false })),
    )
    .await
    .assert_refused(409, "scope_exists");
    let kept = api
        .values(
            &web,
            "decrypt",
            json!([item("user:kept", "email", "r2", &sealed[1], None)]),
        )
        .await;
    assert_eq!(kept, ["kept@example.org"]);
    // The shred moved records.key to the next epoch (decision 0020): a
    // copy of the database from before it opens nothing with this file.
    let file = std::fs::read(api.keyd.records_key()).unwrap();
    assert_eq!(&file[..4], b"ATRK");
    assert_eq!(&file[5..9], &1u32.to_be_bytes());
    // Scopes made and rotated after the shred, under the bucket keys of
    // the new epoch, work beside the old envelopes.
    let rotated = api
        .admin(
            Method::POST,
            "/v1/admin/scope/rotate",
            Some(json!({ "scope": "user:kept" })),
        )
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    api.scope(&web, "user:new", false).await;
    let again = api
        .values(
            &web,
            "encrypt",
            json!([
                item("user:kept", "email", "r3", "v2@example.org", None),
                item("user:new", "email", "r4", "new@example.org", None),
            ]),
        )
        .await;
    let opened = api
        .values(
            &web,
            "decrypt",
            json!([
                item("user:kept", "email", "r2", &sealed[1], None),
                item("user:kept", "email", "r3", &again[0], None),
                item("user:new", "email", "r4", &again[1], None),
            ]),
        )
        .await;
    assert_eq!(opened, ["kept@example.org", "v2@example.org", "new@example.org"]);
}

#[tokio::test]
async fn rotation_rewrap_and_minimum_version() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    let share = api.scope(&web, "user:h", true).await.unwrap();
    let v1 = api
        .values(
            &web,
            "encrypt",
            json!([item("user:h", "email", "r1", "h@example.org", Some(&share))]),
        )
        .await;
    let rotated = api
        .admin(Method::POST, "/v1/admin/scope/rotate", Some(json!({ "scope": "user:h" })))
        .await;
    assert_eq!(rotated.json["versions"], json!([1, 2]), "{}", rotated.text);
    let v2 = api
        .values(
            &web,
            "rewrap",
            json!([item("user:h", "email", "r1", &v1[0], Some(&share))]),
        )
        .await;
    assert_eq!(atrest_scoped::field_key_version(&v1[0]).unwrap(), 1);
    assert_eq!(atrest_scoped::field_key_version(&v2[0]).unwrap(), 2);
    let minimum = api
        .admin(
            Method::POST,
            "/v1/admin/scope/minimum",
            Some(json!({ "scope": "user:h", "minimum_version": 2 })),
        )
        .await;
    assert_eq!(minimum.json["minimum_version"], json!(2), "{}", minimum.text);
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [item("user:h", "email", "r1", &v1[0], Some(&share))] }),
    )
    .await
    .assert_refused(400, "key_version_retired");
    let opened = api
        .values(
            &web,
            "decrypt",
            json!([item("user:h", "email", "r1", &v2[0], Some(&share))]),
        )
        .await;
    assert_eq!(opened, ["h@example.org"]);
    let shown = api
        .admin(Method::GET, "/v1/admin/scope?id=user:h", None)
        .await;
    assert_eq!(shown.json["client_share"], json!(true), "{}", shown.text);
    assert!(!shown.text.contains("atrcs:"), "no share is kept or shown");
}

#[tokio::test]
async fn sixteen_concurrent_clients_every_decryption_audited_and_the_log_verifies() {
    let Some(api) = Api::start().await else {
        return;
    };
    let api = Arc::new(api);
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    const CLIENTS: usize = 16;
    const REQUESTS: usize = 20;
    const ITEMS: usize = 4;
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let api = api.clone();
        let web = web.clone();
        tasks.push(tokio::spawn(async move {
            let scope = format!("user:load{client}");
            let share = api.scope(&web, &scope, true).await.unwrap();
            for request in 0..REQUESTS {
                let items: Vec<Value> = (0..ITEMS)
                    .map(|i| item(&scope, "email", &format!("{request}-{i}"), "x@example.org", Some(&share)))
                    .collect();
                let sealed = api.values(&web, "encrypt", json!(items)).await;
                let items: Vec<Value> = sealed
                    .iter()
                    .enumerate()
                    .map(|(i, s)| item(&scope, "email", &format!("{request}-{i}"), s, Some(&share)))
                    .collect();
                let opened = api.values(&web, "decrypt", json!(items)).await;
                assert!(opened.iter().all(|v| v == "x@example.org"));
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (decrypted, _) = api.audited("-").await;
    assert_eq!(decrypted, CLIENTS * REQUESTS * ITEMS);
    let audit = api.keyd.authority.audit();
    atrest_audit::verify(audit.store(), &audit.public_key())
        .await
        .unwrap();
}

#[tokio::test]
async fn a_large_batch_is_audited_item_by_item_across_several_entries() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["users.*"]).await;
    api.scope(&web, "user:big", false).await;
    let rows: Vec<String> = (0..150).map(|i| format!("row-{i}")).collect();
    let items: Vec<Value> = rows
        .iter()
        .map(|row| item("user:big", "email", row, row, None))
        .collect();
    let sealed = api.values(&web, "encrypt", json!(items)).await;
    let items: Vec<Value> = rows
        .iter()
        .zip(&sealed)
        .map(|(row, s)| item("user:big", "email", row, s, None))
        .collect();
    assert_eq!(api.values(&web, "decrypt", json!(items)).await, rows);
    let entries: Vec<Value> = api
        .audit()
        .await
        .into_iter()
        .filter(|(subject, d)| subject.as_deref() == Some("user:big") && d["outcome"] == "decrypted")
        .map(|(_, d)| d)
        .collect();
    assert_eq!(entries.len(), 3, "64 items an entry at most");
    let audited: Vec<&str> = entries
        .iter()
        .flat_map(|d| d["items"].as_array().unwrap())
        .map(|i| i["row"].as_str().unwrap())
        .collect();
    assert_eq!(audited, rows.iter().map(String::as_str).collect::<Vec<_>>());
}

impl Api {
    /// `POST /v1/scoped/file/{op}` with `body`: the status and the whole
    /// answer (`Err` when the answer was cut; status 0 if before its head).
    async fn file(
        &self,
        token: &str,
        op: &str,
        object: &str,
        share: Option<&str>,
        body: Vec<u8>,
    ) -> (u16, Result<Vec<u8>, String>) {
        let mut request = self
            .client
            .post(self.url(&format!(
                "/v1/scoped/file/{op}?scope=user:files&table=uploads&object={object}"
            )))
            .bearer_auth(token)
            .body(body);
        if let Some(share) = share {
            request = request.header("x-atrest-client-share", share);
        }
        // A stream that fails at once may cut the answer before its head.
        let response = match request.send().await {
            Ok(response) => response,
            Err(e) => return (0, Err(e.to_string())),
        };
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .map_err(|e| e.to_string());
        (status, body)
    }
}

#[tokio::test]
async fn files_stream_through_bound_to_their_object_and_audited() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api
        .app("web", &["user:*"], &["users.*", "uploads.#file"])
        .await;
    let fields_only = api.app("fields", &["user:*"], &["users.*"]).await;
    let share_text = api.scope(&web, "user:files", true).await.unwrap();
    let share = Some(share_text.as_str());

    // Several 64 KiB chunks and a short last one; and an empty file.
    let data: Vec<u8> = (0..300_017u32).map(|i| (i * 31 % 251) as u8).collect();
    let (status, sealed) = api.file(&web, "encrypt", "o1", share, data.clone()).await;
    assert_eq!(status, 200);
    let sealed = sealed.unwrap();
    let chunks = data.len().div_ceil(1 << 16);
    assert_eq!(sealed.len(), atrest_scoped::STREAM_HEADER_LEN + data.len() + chunks * 28);
    assert!(!sealed.windows(64).any(|w| data.windows(64).next() == Some(w)));
    let (status, opened) = api.file(&web, "decrypt", "o1", share, sealed.clone()).await;
    assert_eq!(status, 200);
    assert_eq!(opened.unwrap(), data);
    let (_, empty) = api.file(&web, "encrypt", "o3", share, Vec::new()).await;
    let (_, opened) = api.file(&web, "decrypt", "o3", share, empty.unwrap()).await;
    assert_eq!(opened.unwrap(), b"");

    // The library opens what the API sealed, with the scope's key.
    let stored = api.keyd.authority.storage().scope("user:files").await.unwrap().unwrap();
    let records = api
        .keyd
        .authority
        .scope_wrapping_key("user:files")
        .await
        .unwrap();
    let unwrapped = records
        .unwrap_scope(
            &ScopeId::new("user:files").unwrap(),
            &Wrapped::from_bytes(&stored.keys[0].1).unwrap(),
        )
        .unwrap();
    let client = atrest_scoped::ClientShare::from_text(&share_text).unwrap();
    let ring = Keyring::new(ScopeKey::open(&unwrapped, Some(&client)).unwrap());
    let ctx = atrest_scoped::StreamContext::new("uploads", "o1").unwrap();
    let mut reader =
        atrest_scoped::StreamReader::new(&ring, &ctx, std::io::Cursor::new(sealed.clone()))
            .unwrap();
    let mut read = Vec::new();
    std::io::Read::read_to_end(&mut reader, &mut read).unwrap();
    assert_eq!(read, data);

    // Another object's name, a changed byte, a cut at a chunk boundary:
    // the answer never ends cleanly.
    let (status, moved) = api.file(&web, "decrypt", "o2", share, sealed.clone()).await;
    assert!(status == 200 || status == 0, "{status}");
    assert!(moved.is_err(), "a stream opened as another object's is cut");
    let mut changed = sealed.clone();
    changed[200_000] ^= 1;
    let (_, opened) = api.file(&web, "decrypt", "o1", share, changed).await;
    assert!(opened.is_err(), "a changed chunk cuts the answer");
    let cut = sealed[..atrest_scoped::STREAM_HEADER_LEN + 2 * ((1 << 16) + 28)].to_vec();
    let (_, opened) = api.file(&web, "decrypt", "o1", share, cut).await;
    assert!(opened.is_err(), "a stream cut at a chunk boundary is cut");

    // Refused before anything streams, with stable codes.
    let refused = |(status, body): (u16, Result<Vec<u8>, String>)| {
        let json: Value = serde_json::from_slice(&body.unwrap()).unwrap();
        (status, json["error"].as_str().unwrap().to_owned())
    };
    assert_eq!(
        refused(api.file(&web, "decrypt", "o1", None, sealed.clone()).await),
        (403, "client_share_required".into())
    );
    assert_eq!(
        refused(api.file(&fields_only, "decrypt", "o1", share, sealed.clone()).await),
        (403, "not_allowed".into())
    );
    assert_eq!(
        refused(api.file(&web, "decrypt", "o1", share, sealed[..20].to_vec()).await),
        (400, "malformed".into())
    );
    assert_eq!(
        refused(api.file(&web, "shred", "o1", share, Vec::new()).await),
        (404, "not_found".into())
    );
    for column in ["#file", "b.#file"] {
        api.call(
            &web,
            "/v1/scoped/encrypt",
            &json!({ "items": [item("user:files", column, "o1", "x", share)] }),
        )
        .await
        .assert_refused(400, "invalid_name");
    }
    // Chunks larger than keyd seals: refused before any memory is taken.
    let mut big_chunks = sealed.clone();
    big_chunks[10] = 20;
    assert_eq!(
        refused(api.file(&web, "decrypt", "o1", share, big_chunks).await),
        (400, "malformed".into())
    );
    // HTTP/1.0 cannot mark a cut answer: file routes refuse it.
    let reply = Reply::read(
        api.client
            .post(api.url("/v1/scoped/file/decrypt?scope=user:files&table=uploads&object=o1"))
            .version(reqwest::Version::HTTP_10)
            .bearer_auth(&web)
            .header("x-atrest-client-share", share_text.as_str())
            .body(sealed.clone())
            .send()
            .await
            .unwrap(),
    )
    .await;
    reply.assert_refused(400, "invalid_request");
    assert!(reply.text.contains("HTTP/1.1"), "{}", reply.text);

    // Every decryption is in the log, named as the table's files.
    let entries = api.audit().await;
    let files: Vec<&Value> = entries
        .iter()
        .filter(|(s, d)| s.as_deref() == Some("user:files") && d["outcome"] == "decrypted")
        .flat_map(|(_, d)| d["items"].as_array().unwrap())
        .collect();
    assert!(files.len() >= 5, "{files:?}");
    assert!(files.iter().all(|i| i["field"] == "uploads.#file"));
    assert!(files.iter().any(|i| i["row"] == "o2"));
}

/// An app limited to some operations (a sign-up form that seals and
/// indexes) cannot read back what it sealed; each refusal is audited.
#[tokio::test]
async fn an_app_does_only_the_operations_its_policy_names() {
    let Some(api) = Api::start().await else {
        return;
    };
    let reply = api
        .admin(
            Method::POST,
            "/v1/admin/apps",
            Some(json!({ "name": "signup", "scopes": ["user:*"],
                         "fields": ["users.*", "uploads.#file"], "create_scopes": true,
                         "operations": ["encrypt", "index"] })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.json["operations"], json!(["encrypt", "index"]));
    let signup = reply.json["token"].as_str().unwrap().to_owned();
    let reader = api.app("reader", &["user:*"], &["users.*"]).await;
    api.scope(&signup, "user:ops", false).await;
    let sealed = api
        .values(
            &signup,
            "encrypt",
            json!([item("user:ops", "email", "r1", "ops@example.org", None)]),
        )
        .await;
    let index = json!({ "items": [{ "scope": "user:ops", "table": "users", "index": "email",
                        "columns": ["email"], "bits": 32, "values": ["ops@example.org"] }] });
    assert_eq!(api.call(&signup, "/v1/scoped/index", &index).await.status, 200);
    let envelope = json!({ "items": [item("user:ops", "email", "r1", &sealed[0], None)] });
    for op in ["decrypt", "rewrap"] {
        let refused = api.call(&signup, &format!("/v1/scoped/{op}"), &envelope).await;
        refused.assert_refused(403, "not_allowed");
        assert!(refused.text.contains(&format!("operation {op}")), "{}", refused.text);
    }
    let (status, _) = api.file(&signup, "decrypt", "o1", None, vec![0; 100]).await;
    assert_eq!(status, 403, "a file's opening is a decryption");
    // The app with every operation (the default) reads it back.
    assert_eq!(
        api.values(&reader, "decrypt", envelope["items"].clone()).await,
        ["ops@example.org"]
    );
    let entries = api.audit().await;
    let refusals = entries
        .iter()
        .filter(|(_, d)| d["outcome"] == "not_allowed" && d["app"] == "signup")
        .count();
    assert!(refusals >= 3, "each refusal is audited: {refusals}");
    // A policy naming an operation twice, or none, is refused.
    for operations in [json!([]), json!(["encrypt", "encrypt"]), json!(["sign"])] {
        let reply = api
            .admin(
                Method::POST,
                "/v1/admin/apps",
                Some(json!({ "name": "bad", "scopes": ["user:*"], "fields": ["*"],
                             "operations": operations })),
            )
            .await;
        assert_eq!(reply.status, 400, "{operations}: {}", reply.text);
    }
}

impl Api {
    /// A file request of `user:files` whose body stays open
    /// ([`crate::common::open_chunked_request`]).
    async fn open_file_request(
        &self,
        token: &str,
        op: &str,
        object: &str,
        share: Option<&str>,
    ) -> (tokio::net::TcpStream, String) {
        let path = format!("/v1/scoped/file/{op}?scope=user:files&table=uploads&object={object}");
        let bearer = format!("Bearer {token}");
        let mut headers = vec![("Authorization", bearer.as_str())];
        if let Some(share) = share {
            headers.push(("x-atrest-client-share", share));
        }
        crate::common::open_chunked_request(self.served.addr, &path, &headers).await
    }
}

/// A file route asks the app's policy before it reads anything of the
/// body: an app refused the table's files, or the operation, is answered
/// while its body has not even started, and the refusal is audited.
#[tokio::test]
async fn a_file_route_checks_the_policy_before_reading_the_stream() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api
        .app("web", &["user:*"], &["users.*", "uploads.#file"])
        .await;
    let fields_only = api.app("fields", &["user:*"], &["users.*"]).await;
    let other_scopes = api.app("other", &["team:*"], &["uploads.#file"]).await;
    let share = api.scope(&web, "user:files", true).await.unwrap();
    for token in [&fields_only, &other_scopes] {
        for op in ["decrypt", "encrypt"] {
            let (_, head) = api
                .open_file_request(token, op, "o1", Some(share.as_str()))
                .await;
            assert!(head.starts_with("HTTP/1.1 403"), "{op}: {head}");
        }
    }
    // A short, malformed stream of an app refused the files is refused for
    // the policy, not for the stream.
    let (status, body) = api
        .file(&fields_only, "decrypt", "o1", Some(share.as_str()), vec![0; 20])
        .await;
    let json: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!((status, json["error"].as_str()), (403, Some("not_allowed")));
    let (_, refused) = api.audited("not_allowed").await;
    assert!(refused >= 5, "each refusal is audited: {refused}");
}

/// An app has at most `max_file_streams_per_app` file streams open; the
/// next is refused with 429 `too_many_streams` (audited), other apps are
/// not, and a stream that ends gives its place back.
#[tokio::test]
async fn an_app_has_a_bounded_number_of_open_file_streams() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Some(api) = Api::start_with(AuthorityOptions {
        max_file_streams_per_app: 2,
        ..AuthorityOptions::default()
    })
    .await
    else {
        return;
    };
    let web = api.app("web", &["user:*"], &["uploads.#file"]).await;
    let other = api.app("other", &["user:*"], &["uploads.#file"]).await;
    api.scope(&web, "user:files", false).await;
    let (mut first, head) = api.open_file_request(&web, "encrypt", "o1", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (_second, head) = api.open_file_request(&web, "encrypt", "o2", None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (status, body) = api.file(&web, "encrypt", "o3", None, b"x".to_vec()).await;
    let json: Value = serde_json::from_slice(&body.unwrap()).unwrap();
    assert_eq!((status, json["error"].as_str()), (429, Some("too_many_streams")));
    assert!(json["message"].as_str().unwrap().contains("max_file_streams_per_app"));
    let (_, refused) = api.audited("too_many_streams").await;
    assert_eq!(refused, 1);
    // Another app's streams are its own.
    let (status, sealed) = api.file(&other, "encrypt", "o4", None, b"y".to_vec()).await;
    assert_eq!(status, 200);
    assert!(sealed.is_ok());
    // The first stream ends (its last chunk, then the end of the body);
    // once its whole answer is read, its place is free again.
    first.write_all(b"1\r\nz\r\n0\r\n\r\n").await.unwrap();
    let mut rest = Vec::new();
    first.read_to_end(&mut rest).await.unwrap();
    assert!(rest.ends_with(b"0\r\n\r\n"), "a whole chunked answer");
    let (status, sealed) = api.file(&web, "encrypt", "o5", None, b"w".to_vec()).await;
    assert_eq!(status, 200, "{sealed:?}");
}

#[tokio::test]
async fn data_keys_open_as_their_field_are_audited_and_die_with_the_scope() {
    let Some(api) = Api::start().await else {
        return;
    };
    let web = api.app("web", &["user:*"], &["docs.*"]).await;
    api.scope(&web, "user:dk", false).await;
    let field = |row: &str| {
        json!({ "scope": "user:dk", "table": "docs", "column": "key", "row": row })
    };
    let made = api
        .call(
            &web,
            "/v1/scoped/datakey",
            &json!({ "items": [field("r1"), field("r2")] }),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.text);
    let values = made.json["values"].as_array().unwrap();
    let key = |i: usize| values[i]["key"].as_str().unwrap().to_owned();
    let sealed = |i: usize| values[i]["ciphertext"].as_str().unwrap().to_owned();
    assert_ne!(key(0), key(1), "every data key is new");
    for i in 0..2 {
        assert!(key(i).starts_with(atrest_scoped::DATA_KEY_PREFIX));
        assert!(sealed(i).starts_with("atrf:"));
        assert_eq!(
            atrest_scoped::DataKey::bytes_from_text(&key(i))
                .unwrap()
                .expose()
                .len(),
            32
        );
    }
    let with_value = |row: &str, value: &str| {
        let mut item = field(row);
        item["value"] = json!(value);
        item
    };
    // Its envelope opens as the field it is bound to, and only there.
    let opened = api
        .values(
            &web,
            "decrypt",
            json!([with_value("r1", &sealed(0)), with_value("r2", &sealed(1))]),
        )
        .await;
    assert_eq!(opened, [key(0), key(1)]);
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [with_value("r2", &sealed(0))] }),
    )
    .await
    .assert_refused(400, "authentication_failed");
    // Issued keys are in the log before they are answered, item by item.
    let issued: usize = api
        .audit()
        .await
        .iter()
        .filter(|(_, d)| d["scoped"] == "datakey" && d["outcome"] == "issued")
        .map(|(_, d)| d["items"].as_array().unwrap().len())
        .sum();
    assert_eq!(issued, 2);
    // An app whose policy does not name `datakey` gets none.
    let reply = api
        .admin(
            Method::POST,
            "/v1/admin/apps",
            Some(json!({ "name": "sealer", "scopes": ["user:*"], "fields": ["docs.*"],
                         "operations": ["encrypt", "decrypt"] })),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let sealer = reply.json["token"].as_str().unwrap().to_owned();
    let refused = api
        .call(
            &sealer,
            "/v1/scoped/datakey",
            &json!({ "items": [field("r3")] }),
        )
        .await;
    refused.assert_refused(403, "not_allowed");
    assert!(refused.text.contains("operation datakey"), "{}", refused.text);
    // After the shred, no envelope of the scope opens and no key is made.
    let shred = api
        .admin(Method::POST, "/v1/admin/scope/shred", Some(json!({ "scope": "user:dk" })))
        .await;
    assert_eq!(shred.status, 200, "{}", shred.text);
    api.call(
        &web,
        "/v1/scoped/decrypt",
        &json!({ "items": [with_value("r1", &sealed(0))] }),
    )
    .await
    .assert_refused(410, "scope_shredded");
    api.call(&web, "/v1/scoped/datakey", &json!({ "items": [field("r4")] }))
        .await
        .assert_refused(410, "scope_shredded");
}
