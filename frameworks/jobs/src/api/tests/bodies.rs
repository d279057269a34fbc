//! Request bodies: size, content type, syntax, ids that must match the
//! path, Metronome's 422 shape; a refused body changes nothing.

use axum::body::Body;
use axum::http::StatusCode;
use serde_json::json;

use super::Api;
use crate::api::MAX_BODY_BYTES;

/// Sends `body` to each route that takes a definition; each answer must
/// be `status`, and nothing may reach the backend.
async fn refused_everywhere(api: &Api, ct: Option<&str>, body: &str, status: StatusCode) {
    for (method, uri) in [
        ("POST", "/v1/jobs"),
        ("PUT", "/v1/jobs/adhoc"),
        ("POST", "/v1/jobs/adhoc/schedules"),
        ("PUT", "/v1/jobs/adhoc/schedules/nightly"),
    ] {
        let before = api.b.snapshot();
        let a = api.send(method, uri, ct, Body::from(body.to_owned())).await;
        assert_eq!(a.status, status, "{method} {uri}: {}", a.body);
        assert!(a.body["message"].is_string(), "{}", a.body);
        assert_eq!(api.b.snapshot(), before, "{method} {uri}");
    }
    assert!(api.b.ops().is_empty(), "{:?}", api.b.ops());
}

#[tokio::test]
async fn other_media_types_are_415() {
    let api = Api::seeded();
    refused_everywhere(
        &api,
        Some("text/plain"),
        "{}",
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
    )
    .await;
    let a = api
        .send(
            "POST",
            "/v1/jobs",
            Some("application/xml"),
            Body::from("<job/>"),
        )
        .await;
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("\"application/xml\""),
        "{}",
        a.body
    );
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let api = Api::seeded();
    let big = format!("{{\"id\": \"{}\"}}", "a".repeat(MAX_BODY_BYTES));
    refused_everywhere(&api, None, &big, StatusCode::PAYLOAD_TOO_LARGE).await;
}

#[tokio::test]
async fn text_that_does_not_parse_is_400_with_line_and_column() {
    let api = Api::seeded();
    refused_everywhere(
        &api,
        None,
        "{\n  \"id\": \"x\",\n  oops\n}",
        StatusCode::BAD_REQUEST,
    )
    .await;
    let a = api
        .call("POST", "/v1/jobs", Some("{\n  \"id\": \"x\",\n  oops\n}"))
        .await;
    assert_eq!(a.body["message"], "Invalid JSON");
    let e = a.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(e.starts_with("invalid JSON at line 3, column 3: "), "{e}");
    assert!(!e.contains(" at line 3 column"), "the location once: {e}");

    let y = api
        .send(
            "POST",
            "/v1/jobs",
            Some("application/yaml"),
            Body::from("id: x\nrun: [a,\n"),
        )
        .await;
    assert_eq!(y.status, StatusCode::BAD_REQUEST);
    let e = y.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(e.starts_with("invalid YAML at line "), "{e}");

    let empty = api.call("POST", "/v1/jobs", Some("  ")).await;
    assert_eq!(empty.status, StatusCode::BAD_REQUEST);
    let e = empty.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(e.contains("the body is empty"), "{e}");
    let not_utf8 = api
        .send("POST", "/v1/jobs", None, Body::from(vec![b'"', 0xff, b'"']))
        .await;
    assert_eq!(not_utf8.status, StatusCode::BAD_REQUEST);
    assert!(api.b.ops().is_empty());
}

#[tokio::test]
async fn what_json_cannot_say_or_says_twice_is_400_at_its_line() {
    let api = Api::seeded();
    let a = api
        .send(
            "POST",
            "/v1/jobs",
            Some("application/yaml"),
            Body::from("id: x\nrun:\n  cpus: .nan\n"),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(a.body["message"], "Invalid YAML");
    let e = a.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(e.starts_with("invalid YAML at line 3, column "), "{e}");
    let a = api
        .call("POST", "/v1/jobs", Some("{\"id\": \"x\",\n \"id\": \"y\"}"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    let e = a.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(e.starts_with("invalid JSON at line 2, "), "{e}");
    assert!(api.b.ops().is_empty());
}

#[tokio::test]
async fn an_invalid_definition_is_422_in_metronomes_shape() {
    let api = Api::seeded();
    refused_everywhere(
        &api,
        None,
        r#"{"id": "Not Valid!"}"#,
        StatusCode::UNPROCESSABLE_ENTITY,
    )
    .await;
    let a = api
        .call("POST", "/v1/jobs", Some(r#"{"id": "Not Valid!"}"#))
        .await;
    assert_eq!(a.body["message"], "Object is not valid");
    let d = &a.body["details"][0];
    assert!(d["path"].as_str().unwrap().starts_with('/'), "{d}");
    assert!(!d["errors"].as_array().unwrap().is_empty(), "{d}");
}

#[tokio::test]
async fn a_body_id_other_than_the_paths_is_refused() {
    let api = Api::seeded();
    let before = api.b.snapshot();
    let a = api
        .call(
            "PUT",
            "/v1/jobs/adhoc",
            Some(r#"{"id": "other", "run": {}}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["details"][0]["path"], "/id");
    let e = a.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(
        e.contains("\"other\"") && e.contains("job \"adhoc\""),
        "{e}"
    );
    let a = api
        .call(
            "PUT",
            "/v1/jobs/nightly.backup/schedules/nightly",
            Some(r#"{"id": 7, "cron": "0 3 * * *"}"#),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        a.body["details"],
        json!([{ "path": "/id", "errors": ["is \"7\", but the request names schedule \"nightly\": they must match, or leave it out"] }])
    );
    assert!(api.b.ops().is_empty());
    assert_eq!(api.b.snapshot(), before);
}
