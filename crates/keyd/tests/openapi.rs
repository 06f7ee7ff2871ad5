//! Holds the server to `docs/openapi.json`: a real keyd on 127.0.0.1:0 is
//! driven through every documented operation (real enrollment, blinded
//! unlocks, a planned reboot, a held request, admin calls), and every
//! answer must have a documented status, content type and a body that
//! validates against the documented schema. Every documented path must
//! exist on the server.

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use atrest_keyd::UnlockReply;
use common::{ADMIN_TOKEN, Host, Reply, Server, now};
use reqwest::Method;
use serde_json::{Value, json};

/// The base URI the document is registered under, so that schemas can
/// `$ref` into it by JSON pointer.
const DOCUMENT_URI: &str = "https://atrest.invalid/openapi.json";

/// `docs/openapi.json`, and which operations answered with which status.
struct Contract {
    document: Value,
    registry: jsonschema::Registry<'static>,
    seen: Mutex<BTreeMap<(String, String), BTreeSet<u16>>>,
}

fn load_document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/openapi.json");
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A path template as one segment of a JSON pointer inside a URI fragment.
fn pointer_segment(text: &str) -> String {
    text.replace('~', "~0")
        .replace('/', "~1")
        .replace('{', "%7B")
        .replace('}', "%7D")
}

/// Every (path template, method) the document lists.
fn operations(document: &Value) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            all.push((path.clone(), method.clone()));
        }
    }
    all
}

impl Contract {
    fn load() -> Self {
        let document = load_document();
        assert_eq!(document["openapi"], "3.1.0");
        let registry = jsonschema::Registry::new()
            .draft(jsonschema::Draft::Draft202012)
            .add(DOCUMENT_URI, document.clone())
            .unwrap()
            .prepare()
            .unwrap();
        Self {
            document,
            registry,
            seen: Mutex::default(),
        }
    }

    /// Checks `reply` to `method template` against the document, and notes
    /// that the operation was exercised.
    fn check(&self, method: &Method, template: &str, reply: &Reply) {
        if let Err(violation) = self.violation(method, template, reply) {
            panic!("{violation}");
        }
        self.seen
            .lock()
            .unwrap()
            .entry((template.to_owned(), method.as_str().to_lowercase()))
            .or_default()
            .insert(reply.status);
    }

    /// How `reply` breaks the document, if it does: an undocumented status
    /// or content type, or a body outside the documented schema.
    fn violation(&self, method: &Method, template: &str, reply: &Reply) -> Result<(), String> {
        let method = method.as_str().to_lowercase();
        let operation = self.document["paths"]
            .get(template)
            .and_then(|item| item.get(&method))
            .ok_or_else(|| format!("{method} {template} is not in docs/openapi.json"))?;
        let status = reply.status.to_string();
        let mut pointer = format!(
            "/paths/{}/{method}/responses/{status}",
            pointer_segment(template)
        );
        let mut response = operation["responses"].get(&status).ok_or_else(|| {
            format!(
                "{method} {template} answered {status}, which docs/openapi.json does not \
                 document: {}",
                reply.text
            )
        })?;
        if let Some(target) = response.get("$ref").and_then(Value::as_str) {
            pointer = target.trim_start_matches('#').to_owned();
            response = self
                .document
                .pointer(&pointer)
                .ok_or_else(|| format!("dangling $ref {target}"))?;
        }
        let media = reply.content_type.split(';').next().unwrap_or_default();
        let content = response["content"].as_object().cloned().unwrap_or_default();
        // A response documented without content (a redirect) has none.
        if content.is_empty() && reply.text.is_empty() {
            return Ok(());
        }
        if !content.contains_key(media) {
            return Err(format!(
                "{method} {template} {status} answered as {media:?}; documented: {:?}",
                content.keys().collect::<Vec<_>>()
            ));
        }
        if media != "application/json" {
            return Ok(());
        }
        let schema = json!({
            "$ref": format!("{DOCUMENT_URI}#{pointer}/content/application~1json/schema")
        });
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_registry(&self.registry)
            .build(&schema)
            .map_err(|e| format!("the schema at {pointer} does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(&reply.json)
            .map(|e| format!("{e} (at {})", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "{method} {template} {status}: the body does not match the documented \
                 schema:\n  {}\nbody: {}",
                errors.join("\n  "),
                reply.text
            ))
        }
    }
}

/// A server and the contract it is held to.
struct Api {
    server: Server,
    contract: Contract,
    /// The newest boot ticket a grant carried: what the host keeps in /run.
    ticket: std::sync::Mutex<Value>,
    /// Poll tokens from 202 answers, by request id: what the host keeps.
    poll_tokens: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The grant version unlocks and polls ask for (`None`: no header,
    /// as hosts from before version 2 send).
    grant_version: std::sync::Mutex<Option<u32>>,
}

enum Auth {
    None,
    Admin,
    Wrong,
    /// An app's token (the scoped API).
    App(String),
}

impl Api {
    async fn call(
        &self,
        method: Method,
        template: &str,
        path: &str,
        auth: Auth,
        body: Option<Value>,
    ) -> Reply {
        let server = &self.server;
        let mut request = server.client.request(method.clone(), server.url(path));
        match auth {
            Auth::None => {}
            Auth::Admin => request = request.bearer_auth(ADMIN_TOKEN),
            Auth::Wrong => request = request.bearer_auth("not-the-token"),
            Auth::App(token) => request = request.bearer_auth(token),
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        if template == "/v1/requests/{id}"
            && let Some(id) = path
                .strip_prefix("/v1/requests/")
                .and_then(|p| p.split('?').next())
            && let Some(token) = self.poll_tokens.lock().unwrap().get(id)
        {
            request = request.header(atrest_keyd::POLL_TOKEN_HEADER, token.as_str());
        }
        if (template == "/v1/unlock" || template == "/v1/requests/{id}")
            && let Some(version) = *self.grant_version.lock().unwrap()
        {
            request = request.header(atrest_keyd::GRANT_VERSION_HEADER, version);
        }
        let reply = Reply::read(request.send().await.unwrap()).await;
        self.contract.check(&method, template, &reply);
        if reply.status == 202
            && let (Some(id), Some(token)) = (
                reply.json["request_id"].as_str(),
                reply.json["poll_token"].as_str(),
            )
        {
            self.poll_tokens
                .lock()
                .unwrap()
                .insert(id.to_owned(), token.to_owned());
        }
        if reply.status == 200 && reply.json["boot_ticket"].is_string() {
            *self.ticket.lock().unwrap() = reply.json["boot_ticket"].clone();
        }
        reply
    }

    /// A host route without path parameters.
    async fn host_call(&self, method: Method, path: &str, body: Option<Value>) -> Reply {
        self.call(method, path, path, Auth::None, body).await
    }

    async fn admin(
        &self,
        method: Method,
        template: &str,
        path: &str,
        body: Option<Value>,
    ) -> Reply {
        self.call(method, template, path, Auth::Admin, body).await
    }

    async fn poll(&self, id: &str) -> Reply {
        let path = format!("/v1/requests/{id}?wait=0");
        let template = "/v1/requests/{id}";
        self.call(Method::GET, template, &path, Auth::None, None)
            .await
    }

    async fn unlock(&self, host: &Host) -> Reply {
        let (signed, state) = host.unlock();
        let mut signed = serde_json::to_value(&signed).unwrap();
        let ticket = self.ticket.lock().unwrap().clone();
        if ticket.is_string() {
            signed["boot_ticket"] = ticket;
        }
        let reply = self
            .host_call(Method::POST, "/v1/unlock", Some(signed))
            .await;
        if reply.status == 200 {
            assert_unblinds(&reply, state, host);
        }
        reply
    }
}

/// A granted answer opens the host's keyslot.
fn assert_unblinds(reply: &Reply, state: atrest_remote::UnblindingState, host: &Host) {
    let UnlockReply::Granted { response, .. } = serde_json::from_value(reply.json.clone()).unwrap()
    else {
        panic!("not granted: {}", reply.text);
    };
    assert_eq!(
        state.unblind(&response).unwrap().expose(),
        host.key.expose()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_operation_answers_as_documented() {
    let api = Api {
        server: Server::start().await,
        contract: Contract::load(),
        ticket: std::sync::Mutex::new(Value::Null),
        poll_tokens: Default::default(),
        grant_version: Default::default(),
    };
    let (get, post, put) = (Method::GET, Method::POST, Method::PUT);

    // Health, metrics, the approval page, info.
    assert_eq!(
        api.host_call(get.clone(), "/healthz", None).await.status,
        200
    );
    let metrics = api.host_call(get.clone(), "/metrics", None).await;
    assert_eq!(metrics.status, 200);
    assert!(metrics.text.contains("# EOF"), "{}", metrics.text);
    let page = api.host_call(get.clone(), "/approve", None).await;
    assert_eq!(page.status, 200);
    let info = api.host_call(get.clone(), "/v1/info", None).await;
    assert_eq!(info.status, 200);

    // Tokens: refused without the admin token, then made.
    let tokens = "/v1/admin/tokens";
    let token_body = json!({ "group": "web", "expires_in": 600 });
    for auth in [Auth::None, Auth::Wrong] {
        let reply = api
            .call(post.clone(), tokens, tokens, auth, Some(token_body.clone()))
            .await;
        reply.assert_refused(401, "unauthorized");
    }
    let bad_group = json!({ "group": "no spaces", "expires_in": 600 });
    api.admin(post.clone(), tokens, tokens, Some(bad_group))
        .await
        .assert_refused(400, "invalid_field");
    // Lifetimes from a minute to a week, nothing else.
    for refused in [0, 59, 7 * 86_400 + 1, 1_000_000_000_000, u64::MAX] {
        let body = json!({ "group": "web", "expires_in": refused });
        let reply = api.admin(post.clone(), tokens, tokens, Some(body)).await;
        reply.assert_refused(400, "invalid_field");
        assert!(reply.text.contains("7 days"), "{refused}: {}", reply.text);
    }
    for accepted in [60, 7 * 86_400] {
        let body = json!({ "group": "web", "expires_in": accepted });
        let before = now();
        let reply = api.admin(post.clone(), tokens, tokens, Some(body)).await;
        assert_eq!(reply.status, 200, "{accepted}: {}", reply.text);
        let expires_at = reply.json["expires_at"].as_u64().unwrap();
        assert!(
            (before + accepted..=now() + accepted).contains(&expires_at),
            "{}",
            reply.text
        );
    }
    let token = api
        .admin(post.clone(), tokens, tokens, Some(token_body.clone()))
        .await;
    assert_eq!(token.status, 200);

    // Enrollment, a spent token, a taken name, a bad name.
    let identity = atrest_remote::HostIdentity::generate();
    let enroll_body = |token: &Value, name: &str| {
        json!({
            "token": token["token"],
            "host_name": name,
            "public_key": identity.public_key().to_string(),
        })
    };
    let enrolled = api
        .host_call(
            post.clone(),
            "/v1/enroll",
            Some(enroll_body(&token.json, "web-1")),
        )
        .await;
    assert_eq!(enrolled.status, 200, "{}", enrolled.text);
    api.host_call(
        post.clone(),
        "/v1/enroll",
        Some(enroll_body(&token.json, "web-2")),
    )
    .await
    .assert_refused(401, "bad_token");
    let token = api
        .admin(post.clone(), tokens, tokens, Some(token_body.clone()))
        .await;
    api.host_call(
        post.clone(),
        "/v1/enroll",
        Some(enroll_body(&token.json, "web-1")),
    )
    .await
    .assert_refused(409, "host_exists");
    let token = api
        .admin(post.clone(), tokens, tokens, Some(token_body.clone()))
        .await;
    api.host_call(
        post.clone(),
        "/v1/enroll",
        Some(enroll_body(&token.json, "web 1")),
    )
    .await
    .assert_refused(400, "invalid_field");
    let enrollment: atrest_keyd::Enrollment = serde_json::from_value(enrolled.json).unwrap();
    let (binding, key) = atrest_remote::enroll(&enrollment.exchange_key);
    let host = Host {
        identity,
        enrollment,
        binding,
        key,
    };

    // A real blinded unlock, then its replay.
    let (signed, state) = host.unlock();
    let signed = serde_json::to_value(&signed).unwrap();
    let granted = api
        .host_call(post.clone(), "/v1/unlock", Some(signed.clone()))
        .await;
    assert_eq!(granted.status, 200, "{}", granted.text);
    assert_unblinds(&granted, state, &host);
    // The checkpoint verifies under the audit key /v1/info and enrollment gave.
    let checkpoint: atrest_audit::Checkpoint =
        serde_json::from_value(granted.json["checkpoint"].clone()).unwrap();
    assert_eq!(
        info.json["audit_public_key"],
        host.enrollment.audit_public_key.to_string()
    );
    checkpoint
        .verify(&host.enrollment.audit_public_key)
        .unwrap();
    api.host_call(post.clone(), "/v1/unlock", Some(signed))
        .await
        .assert_refused(403, "replayed_nonce");
    // That was grant version 1 (no header); from here on hosts ask for 2,
    // and every grant below is version 2, validated against its schema.
    assert!(granted.json["audit"].is_object() && granted.json.get("version").is_none());
    *api.grant_version.lock().unwrap() = Some(atrest_wire::GRANT_VERSION);
    let (signed, state) = host.unlock();
    let mut signed = serde_json::to_value(&signed).unwrap();
    signed["boot_ticket"] = granted.json["boot_ticket"].clone();
    let v2 = api
        .host_call(post.clone(), "/v1/unlock", Some(signed))
        .await;
    assert_eq!(v2.status, 200, "{}", v2.text);
    assert_eq!(v2.json["version"], 2, "{}", v2.text);
    assert!(v2.json["proof"]["inclusion"].is_string(), "{}", v2.text);
    assert!(v2.json.get("audit").is_none(), "{}", v2.text);
    assert_unblinds(&v2, state, &host);

    // Another vault bound without a token: the same exchange key.
    let bind = serde_json::to_value(host.identity.sign_bind(atrest_remote::BindRequest {
        host_id: host.enrollment.host_id.clone(),
        nonce: atrest_remote::RequestNonce::random(),
        timestamp: now(),
    }))
    .unwrap();
    let bound = api
        .host_call(post.clone(), "/v1/bind", Some(bind.clone()))
        .await;
    assert_eq!(bound.status, 200, "{}", bound.text);
    assert_eq!(bound.json["key_id"], json!(host.enrollment.key_id));
    api.host_call(post.clone(), "/v1/bind", Some(bind))
        .await
        .assert_refused(403, "replayed_nonce");

    // The boot released to reports its vault's generation (witnessed);
    // an earlier one is refused; an unlock claiming the vault's state
    // gets the witnessed generation back.
    let ticket = granted.json["boot_ticket"].clone();
    let mut report = serde_json::to_value(host.generation_report(100, 1, &[], now())).unwrap();
    report["boot_ticket"] = ticket.clone();
    let witnessed = api
        .host_call(post.clone(), "/v1/generation", Some(report.clone()))
        .await;
    assert_eq!(witnessed.status, 200, "{}", witnessed.text);
    assert_eq!(witnessed.json["witnessed"]["seq"], 100);
    api.host_call(post.clone(), "/v1/generation", Some(report))
        .await
        .assert_refused(403, "replayed_nonce");
    let mut older = serde_json::to_value(host.generation_report(90, 2, &[], now())).unwrap();
    older["boot_ticket"] = ticket.clone();
    api.host_call(post.clone(), "/v1/generation", Some(older))
        .await
        .assert_refused(409, "generation_regressed");
    let mut forked = serde_json::to_value(host.generation_report(120, 3, &[], now())).unwrap();
    forked["boot_ticket"] = ticket.clone();
    api.host_call(post.clone(), "/v1/generation", Some(forked))
        .await
        .assert_refused(409, "generation_forked");
    let unproven = serde_json::to_value(host.generation_report(110, 4, &[], now())).unwrap();
    api.host_call(post.clone(), "/v1/generation", Some(unproven))
        .await
        .assert_refused(403, "unproven_boot");
    let (mut request, state) = host.request(now());
    let current = host.generation_report(100, 1, &[], now()).report;
    request.generation = Some(atrest_remote::GenerationClaim {
        checkpoint: current.checkpoint,
        seq: current.seq,
        chain: current.chain,
        config_generation: current.config_generation,
        lineage: current.lineage,
    });
    let mut claimed = serde_json::to_value(host.identity.sign(request)).unwrap();
    claimed["boot_ticket"] = ticket;
    let released = api
        .host_call(post.clone(), "/v1/unlock", Some(claimed))
        .await;
    assert_eq!(released.status, 200, "{}", released.text);
    assert_eq!(released.json["witnessed"]["seq"], 100);
    assert_unblinds(&released, state, &host);

    // A planned reboot: the next boot id is accounted for.
    let mut notice = serde_json::to_value(host.reboot_notice(now())).unwrap();
    notice["boot_ticket"] = granted.json["boot_ticket"].clone();
    assert!(
        notice["boot_ticket"].is_string(),
        "the first grant carries a ticket"
    );
    let reboot = api
        .host_call(post.clone(), "/v1/reboot", Some(notice.clone()))
        .await;
    assert_eq!(reboot.status, 200, "{}", reboot.text);
    api.host_call(post.clone(), "/v1/reboot", Some(notice))
        .await
        .assert_refused(403, "replayed_nonce");
    let (mut request, state) = host.request(now());
    request.boot_id = atrest_remote::BootId::new("next-boot").unwrap();
    let after_reboot = api
        .host_call(
            post.clone(),
            "/v1/unlock",
            Some(serde_json::to_value(host.identity.sign(request)).unwrap()),
        )
        .await;
    assert_eq!(after_reboot.status, 200, "{}", after_reboot.text);
    assert_unblinds(&after_reboot, state, &host);

    // Policies: hold web's requests for an approver.
    let policy = "/v1/admin/policy";
    let approve = json!({ "scope": "group", "name": "web", "policy": "approve" });
    assert_eq!(
        api.admin(put.clone(), policy, policy, Some(approve))
            .await
            .status,
        200
    );
    let default = json!({ "scope": "default", "policy": "auto", "unannounced_reboot": "deny" });
    assert_eq!(
        api.admin(put.clone(), policy, policy, Some(default))
            .await
            .status,
        200
    );
    let host_scope = json!({ "scope": "host", "name": "web-1", "policy": "auto" });
    assert_eq!(
        api.admin(put.clone(), policy, policy, Some(host_scope.clone()))
            .await
            .status,
        200
    );
    let nameless = json!({ "scope": "group", "policy": "auto" });
    api.admin(put.clone(), policy, policy, Some(nameless))
        .await
        .assert_refused(400, "invalid_field");
    let listed = api.admin(get.clone(), policy, policy, None).await;
    assert_eq!(
        listed.json.as_array().map(Vec::len),
        Some(3),
        "{}",
        listed.text
    );
    let host_rule = json!({ "scope": "host", "name": "web-1", "policy": "approve" });
    api.admin(put.clone(), policy, policy, Some(host_rule))
        .await;

    // A held request: pending, listed, polled, approved, released.
    let (signed, state) = host.unlock();
    let held = api
        .host_call(
            post.clone(),
            "/v1/unlock",
            Some(serde_json::to_value(&signed).unwrap()),
        )
        .await;
    assert_eq!(held.status, 202, "{}", held.text);
    let id = held.json["request_id"].as_str().unwrap().to_owned();
    let requests = "/v1/admin/requests";
    let pending = api.admin(get.clone(), requests, requests, None).await;
    assert_eq!(pending.json[0]["id"], id.as_str(), "{}", pending.text);
    let still = api.poll(&id).await;
    assert_eq!(still.status, 202);
    let decide = "/v1/admin/requests/{id}/{action}";
    let approver = Some(json!({ "approver": "alice" }));
    let approved = api
        .admin(
            post.clone(),
            decide,
            &format!("/v1/admin/requests/{id}/approve"),
            approver.clone(),
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.text);
    assert_eq!(approved.json["state"], "approved");
    let released = api.poll(&id).await;
    assert_eq!(released.status, 200, "{}", released.text);
    assert_unblinds(&released, state, &host);
    api.admin(
        post.clone(),
        decide,
        &format!("/v1/admin/requests/{id}/deny"),
        approver.clone(),
    )
    .await
    .assert_refused(409, "already_decided");
    api.admin(
        post.clone(),
        decide,
        "/v1/admin/requests/nope/approve",
        approver.clone(),
    )
    .await
    .assert_refused(404, "unknown_request");

    // Another, denied: the host's poll says so.
    let held = api.unlock(&host).await;
    assert_eq!(held.status, 202, "{}", held.text);
    let id = held.json["request_id"].as_str().unwrap().to_owned();
    api.admin(
        post.clone(),
        decide,
        &format!("/v1/admin/requests/{id}/deny"),
        approver.clone(),
    )
    .await;
    api.poll(&id).await.assert_refused(403, "denied");
    api.poll("never-made")
        .await
        .assert_refused(404, "unknown_request");
    api.admin(put.clone(), policy, policy, Some(host_scope))
        .await;

    // Hosts: listed, shown, rotated (the next unlock is told to re-bind),
    // revoked, reinstated, shredded.
    let hosts = "/v1/admin/hosts";
    let listed = api.admin(get.clone(), hosts, hosts, None).await;
    assert_eq!(listed.json[0]["id"], "web-1", "{}", listed.text);
    let show = "/v1/admin/hosts/{id}";
    assert_eq!(
        api.admin(get.clone(), show, "/v1/admin/hosts/web-1", None)
            .await
            .status,
        200
    );
    api.admin(get.clone(), show, "/v1/admin/hosts/nobody", None)
        .await
        .assert_refused(404, "unknown_host");
    api.admin(get.clone(), show, "/v1/admin/hosts/a%20b", None)
        .await
        .assert_refused(400, "invalid_field");
    let action = "/v1/admin/hosts/{id}/{action}";
    let rotated = api
        .admin(post.clone(), action, "/v1/admin/hosts/web-1/rotate", None)
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.text);
    assert_eq!(
        rotated.json["previous_key_id"],
        host.binding.key_id().to_string()
    );
    let rebind = api.unlock(&host).await;
    assert_eq!(rebind.status, 200, "{}", rebind.text);
    assert_eq!(rebind.json["rebind"]["key_id"], rotated.json["key_id"]);
    for (step, state) in [
        ("revoke", "revoked"),
        ("reinstate", "active"),
        ("shred", "shredded"),
    ] {
        let path = format!("/v1/admin/hosts/web-1/{step}");
        let reply = api.admin(post.clone(), action, &path, None).await;
        assert_eq!(reply.status, 200, "{}", reply.text);
        assert_eq!(reply.json["state"], state);
    }
    api.admin(
        post.clone(),
        action,
        "/v1/admin/hosts/web-1/reinstate",
        None,
    )
    .await
    .assert_refused(410, "shredded");
    api.admin(post.clone(), action, "/v1/admin/hosts/nobody/revoke", None)
        .await
        .assert_refused(404, "unknown_host");
    api.unlock(&host).await.assert_refused(410, "shredded");

    // Approvers.
    let approvers = "/v1/admin/approvers";
    let added = api
        .admin(
            post.clone(),
            approvers,
            approvers,
            Some(json!({ "name": "alice" })),
        )
        .await;
    assert_eq!(added.status, 200, "{}", added.text);
    let code = atrest_keyd::totp_code(added.json["secret"].as_str().unwrap(), "alice", now());
    assert!(code.as_ref().is_some_and(|c| c.len() == 6));

    // The approval page's forms, as a browser posts them.
    let browser = reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let web = |method: Method,
               template: &'static str,
               path: String,
               form: Vec<(&'static str, String)>| {
        let request = browser
            .request(method.clone(), api.server.url(&path))
            .form(&form);
        let contract = &api.contract;
        async move {
            let reply = Reply::read(request.send().await.unwrap()).await;
            contract.check(&method, template, &reply);
            reply
        }
    };
    let login = "/approve/login";
    let decide = "/approve/{id}/{action}";
    let script = web(
        get.clone(),
        "/approve/countdown.js",
        "/approve/countdown.js".into(),
        vec![],
    )
    .await;
    assert_eq!(script.status, 200);
    assert_eq!(
        web(post.clone(), login, login.into(), vec![]).await.status,
        400
    );
    let unknown = vec![
        ("name", "mallory".to_owned()),
        ("code", "123456".to_owned()),
    ];
    assert_eq!(
        web(post.clone(), login, login.into(), unknown).await.status,
        401
    );
    let no_session = web(
        post.clone(),
        decide,
        "/approve/req_x/approve".into(),
        vec![],
    )
    .await;
    assert_eq!(no_session.status, 401);
    let alice = vec![("name", "alice".to_owned()), ("code", code.unwrap())];
    assert_eq!(
        web(post.clone(), login, login.into(), alice).await.status,
        303
    );
    let page = web(get.clone(), "/approve", "/approve".into(), vec![]).await;
    let marker = "name=\"csrf\" value=\"";
    let start = page.text.find(marker).unwrap() + marker.len();
    let csrf = page.text[start..][..page.text[start..].find('"').unwrap()].to_owned();
    let forged = vec![("csrf", "forged".to_owned())];
    let refused = web(post.clone(), decide, "/approve/req_x/deny".into(), forged).await;
    assert_eq!(refused.status, 403);
    let token = vec![("csrf", csrf.clone())];
    let unknown = web(
        post.clone(),
        decide,
        "/approve/req_x/deny".into(),
        token.clone(),
    )
    .await;
    assert_eq!(unknown.status, 303);
    let logout = "/approve/logout";
    assert_eq!(
        web(post.clone(), logout, logout.into(), token).await.status,
        303
    );

    scoped(&api).await;

    // Every documented operation was exercised.
    let seen = api.contract.seen.lock().unwrap();
    let missing: Vec<_> = operations(&api.contract.document)
        .into_iter()
        .filter(|op| !seen.contains_key(op))
        .collect();
    assert!(missing.is_empty(), "never exercised: {missing:?}");
}

/// The scoped API (issue 12): apps, scopes, every operation and its
/// refusals.
async fn scoped(api: &Api) {
    let (get, post, put) = (Method::GET, Method::POST, Method::PUT);
    let apps = "/v1/admin/apps";
    let app = api
        .admin(
            post.clone(),
            apps,
            apps,
            Some(
                json!({ "name": "web", "scopes": ["user:*"], "fields": ["users.*"],
                         "create_scopes": true }),
            ),
        )
        .await;
    assert_eq!(app.status, 200, "{}", app.text);
    let token = app.json["token"].as_str().unwrap().to_owned();
    api.admin(
        post.clone(),
        apps,
        apps,
        Some(json!({ "name": "web", "scopes": ["user:*"], "fields": ["users.*"] })),
    )
    .await
    .assert_refused(409, "app_exists");
    api.admin(
        post.clone(),
        apps,
        apps,
        Some(json!({ "name": "", "scopes": [], "fields": [] })),
    )
    .await
    .assert_refused(400, "invalid_request");
    assert_eq!(api.admin(get.clone(), apps, apps, None).await.status, 200);
    let scoped = |path: &'static str, body: Value| {
        let token = token.clone();
        async move {
            api.call(Method::POST, path, path, Auth::App(token), Some(body))
                .await
        }
    };
    let created = scoped(
        "/v1/scoped/scopes",
        json!({ "scope": "user:1", "client_share": true }),
    )
    .await;
    assert_eq!(created.status, 200, "{}", created.text);
    let share = created.json["client_share_secret"]
        .as_str()
        .unwrap()
        .to_owned();
    scoped(
        "/v1/scoped/scopes",
        json!({ "scope": "user:1", "client_share": true }),
    )
    .await
    .assert_refused(409, "scope_exists");
    scoped(
        "/v1/scoped/scopes",
        json!({ "scope": "org:1", "client_share": true }),
    )
    .await
    .assert_refused(403, "not_allowed");
    let item = |value: &str, share: Option<&str>| {
        let mut item = json!({ "scope": "user:1", "table": "users", "column": "email",
                               "row": "r1", "value": value });
        if let Some(share) = share {
            item["client_share"] = json!(share);
        }
        json!({ "items": [item] })
    };
    let sealed = scoped("/v1/scoped/encrypt", item("a@example.org", Some(&share))).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    let envelope = sealed.json["values"][0].as_str().unwrap().to_owned();
    let opened = scoped("/v1/scoped/decrypt", item(&envelope, Some(&share))).await;
    assert_eq!(opened.json["values"][0], "a@example.org", "{}", opened.text);
    scoped("/v1/scoped/decrypt", item(&envelope, None))
        .await
        .assert_refused(403, "client_share_required");
    scoped("/v1/scoped/decrypt", item("atrf:AAAA", Some(&share)))
        .await
        .assert_refused(400, "malformed");
    api.call(
        post.clone(),
        "/v1/scoped/decrypt",
        "/v1/scoped/decrypt",
        Auth::Wrong,
        Some(item(&envelope, None)),
    )
    .await
    .assert_refused(401, "bad_app_token");
    let big = Value::String("x".repeat(2 * 1024 * 1024));
    scoped("/v1/scoped/decrypt", big)
        .await
        .assert_refused(413, "body_too_large");
    let rewrapped = scoped("/v1/scoped/rewrap", item(&envelope, Some(&share))).await;
    assert_eq!(rewrapped.status, 200, "{}", rewrapped.text);
    // Files: raw bodies both ways (`users.*` covers `users.#file`).
    let file = |op: &'static str, body: Vec<u8>, share: Option<String>| {
        let token = token.clone();
        async move {
            let server = &api.server;
            let mut request = server
                .client
                .post(server.url(&format!(
                    "/v1/scoped/file/{op}?scope=user:1&table=users&object=f1"
                )))
                .bearer_auth(token)
                .body(body);
            if let Some(share) = share {
                request = request.header("x-atrest-client-share", share);
            }
            let (reply, bytes) = Reply::read_bytes(request.send().await.unwrap()).await;
            api.contract
                .check(&Method::POST, "/v1/scoped/file/{operation}", &reply);
            (reply, bytes)
        }
    };
    let (sealed, stream) = file("encrypt", b"a file".to_vec(), Some(share.clone())).await;
    assert_eq!(sealed.status, 200, "{}", sealed.text);
    let (opened, plain) = file("decrypt", stream.clone(), Some(share.clone())).await;
    assert_eq!((opened.status, &plain[..]), (200, &b"a file"[..]));
    file("decrypt", stream, None)
        .await
        .0
        .assert_refused(403, "client_share_required");
    file("decrypt", b"short".to_vec(), Some(share.clone()))
        .await
        .0
        .assert_refused(400, "malformed");
    // As many streams as one app may have open, their bodies still open:
    // the next one is refused.
    let bearer = format!("Bearer {token}");
    let mut open = Vec::new();
    for i in 0..atrest_keyd::DEFAULT_FILE_STREAMS_PER_APP {
        let (conn, head) = common::open_chunked_request(
            api.server.addr,
            &format!("/v1/scoped/file/encrypt?scope=user:1&table=users&object=open{i}"),
            &[
                ("Authorization", bearer.as_str()),
                ("x-atrest-client-share", share.as_str()),
            ],
        )
        .await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(conn);
    }
    file("encrypt", b"one more".to_vec(), Some(share.clone()))
        .await
        .0
        .assert_refused(429, "too_many_streams");
    drop(open);
    // Every documented normalisation, in a body that must validate against
    // the documented request schema and be accepted: the document once
    // listed names the server refused.
    let body = json!({ "items": [{ "scope": "user:1", "table": "users", "index": "email_idx",
                        "columns": ["email"], "bits": 16,
                        "normalize": ["trim", "lowercase", "collapse-whitespace",
                                      "remove-whitespace", "digits-only"],
                        "values": ["A@example.org"], "client_share": share }] });
    let request_schema = jsonschema::options()
        .with_draft(jsonschema::Draft::Draft202012)
        .with_registry(&api.contract.registry)
        .build(&json!({ "$ref": format!(
            "{DOCUMENT_URI}#/paths/~1v1~1scoped~1index/post/requestBody/content/application~1json/schema"
        ) }))
        .unwrap();
    assert!(
        request_schema.is_valid(&body),
        "the documented request schema refuses {body}"
    );
    let index = scoped("/v1/scoped/index", body).await;
    assert_eq!(index.status, 200, "{}", index.text);
    // A data key, and its envelope opened as the field it is bound to.
    let field = json!({ "scope": "user:1", "table": "users", "column": "doc_key", "row": "r1",
                        "client_share": share });
    let made = scoped("/v1/scoped/datakey", json!({ "items": [field.clone()] })).await;
    assert_eq!(made.status, 200, "{}", made.text);
    let mut sealed = field;
    sealed["value"] = made.json["values"][0]["ciphertext"].clone();
    let opened = scoped("/v1/scoped/decrypt", json!({ "items": [sealed] })).await;
    assert_eq!(opened.status, 200, "{}", opened.text);
    assert_eq!(opened.json["values"][0], made.json["values"][0]["key"]);
    let nobody = json!({ "items": [{ "scope": "user:none", "table": "users", "column": "email",
                                     "row": "r1", "value": "x" }] });
    scoped("/v1/scoped/encrypt", nobody)
        .await
        .assert_refused(404, "unknown_scope");

    // Admin: scopes, windows, rotation, minimum, shred.
    let scopes = "/v1/admin/scopes";
    let plain = api
        .admin(
            post.clone(),
            scopes,
            scopes,
            Some(json!({ "scope": "user:2", "client_share": false })),
        )
        .await;
    assert_eq!(plain.status, 200, "{}", plain.text);
    assert_eq!(
        api.admin(get.clone(), scopes, scopes, None).await.status,
        200
    );
    let show = "/v1/admin/scope";
    assert_eq!(
        api.admin(get.clone(), show, "/v1/admin/scope?id=user%3A2", None)
            .await
            .status,
        200
    );
    api.admin(get.clone(), show, "/v1/admin/scope?id=user%3A9", None)
        .await
        .assert_refused(404, "unknown_scope");
    let window = "/v1/admin/scope/window";
    let set = api
        .admin(
            put.clone(),
            window,
            window,
            Some(json!({ "scope": "user:2",
                         "window": { "start": "02:00", "end": "03:00", "fields": ["users.email"] } })),
        )
        .await;
    assert_eq!(set.status, 200, "{}", set.text);
    api.admin(
        put.clone(),
        window,
        window,
        Some(json!({ "scope": "user:2",
                     "window": { "start": "02:00", "end": "02:00", "fields": ["users.email"] } })),
    )
    .await
    .assert_refused(400, "invalid_window");
    let rotate = "/v1/admin/scope/rotate";
    let rotated = api
        .admin(
            post.clone(),
            rotate,
            rotate,
            Some(json!({ "scope": "user:2" })),
        )
        .await;
    assert_eq!(rotated.json["versions"], json!([1, 2]), "{}", rotated.text);
    let minimum = "/v1/admin/scope/minimum";
    assert_eq!(
        api.admin(
            post.clone(),
            minimum,
            minimum,
            Some(json!({ "scope": "user:2", "minimum_version": 2 }))
        )
        .await
        .status,
        200
    );
    api.admin(
        post.clone(),
        minimum,
        minimum,
        Some(json!({ "scope": "user:2", "minimum_version": 3 })),
    )
    .await
    .assert_refused(400, "invalid_request");
    let shred = "/v1/admin/scope/shred";
    let shredded = api
        .admin(
            post.clone(),
            shred,
            shred,
            Some(json!({ "scope": "user:2" })),
        )
        .await;
    assert_eq!(shredded.json["shredded"], json!(true), "{}", shredded.text);
    api.admin(
        post.clone(),
        rotate,
        rotate,
        Some(json!({ "scope": "user:2" })),
    )
    .await
    .assert_refused(410, "scope_shredded");
    let remove = "/v1/admin/apps/{name}";
    assert_eq!(
        api.admin(Method::DELETE, remove, "/v1/admin/apps/web", None)
            .await
            .status,
        200
    );
    api.admin(Method::DELETE, remove, "/v1/admin/apps/web", None)
        .await
        .assert_refused(404, "unknown_app");
}

/// Every path the document lists is routed (no `not_found` fallback, no
/// 405), and a path it does not list gets the JSON 404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_documented_path_exists_and_nothing_else_does() {
    let server = Server::start().await;
    let contract = Contract::load();
    for (template, method) in operations(&contract.document) {
        let operation = &contract.document["paths"][&template][&method];
        let mut path = template.clone();
        for parameter in operation["parameters"].as_array().into_iter().flatten() {
            let name = parameter["name"].as_str().unwrap();
            let value = parameter["schema"]["enum"][0].as_str().unwrap_or("web-1");
            path = path.replace(&format!("{{{name}}}"), value);
        }
        let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        // The page's forms answer with redirects: see them, not the page.
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let mut request = client
            .request(method.clone(), server.url(&path))
            .bearer_auth(ADMIN_TOKEN);
        if operation.get("requestBody").is_some() {
            request = request.json(&json!({}));
        }
        let reply = Reply::read(request.send().await.unwrap()).await;
        contract.check(&method, &template, &reply);
        assert_ne!(
            reply.code(),
            Some("not_found"),
            "{method} {path}: {}",
            reply.text
        );
    }
    for path in ["/v1/nothing", "/v2/unlock", "/v1/admin/nothing", "/"] {
        let reply = server.get(path).await;
        reply.assert_refused(404, "not_found");
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .with_registry(&contract.registry)
            .build(&json!({ "$ref": format!("{DOCUMENT_URI}#/components/schemas/Error") }))
            .unwrap();
        assert!(validator.is_valid(&reply.json), "{}", reply.text);
    }
}

/// The checks above are only as good as the schemas: a body the server
/// must never send fails them.
#[test]
fn the_contract_rejects_wrong_bodies() {
    let contract = Contract::load();
    let reply = |status: u16, json: Value| Reply {
        status,
        content_type: "application/json".into(),
        text: json.to_string(),
        json,
    };
    let wrong = [
        (200, json!({ "status": "granted" })),
        (
            200,
            json!({ "status": "pending", "request_id": "x", "reason": "r", "expires_at": 1 }),
        ),
        (
            202,
            json!({ "status": "granted", "response": "A".repeat(43), "audit_seq": 1,
                      "checkpoint": null, "rebind": null, "key": "leaked" }),
        ),
        (
            401,
            json!({ "error": "replayed_nonce", "message": "wrong status for this code" }),
        ),
        (403, json!({ "error": "no_such_code", "message": "" })),
    ];
    for (status, body) in wrong {
        let checked = contract.violation(&Method::POST, "/v1/unlock", &reply(status, body.clone()));
        assert!(checked.is_err(), "{status} {body} passed the contract");
    }
    let right = json!({ "status": "pending", "request_id": format!("req_{}", "A".repeat(22)),
                        "reason": "r", "expires_at": 1 });
    contract.check(&Method::POST, "/v1/unlock", &reply(202, right));
}
