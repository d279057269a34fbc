//! Refusals: each with Marathon's status and body, and nothing changed.

use super::*;

#[tokio::test]
async fn an_invalid_definition_is_422_with_field_paths() {
    let api = Api::new();
    let bad = with(MARATHON_APP, |v| {
        v["upgradeStrategy"]["minimumHealthCapacity"] = json!(1.5);
        v["cpus"] = json!(-1);
    });
    let a = api.call("POST", "/v2/apps", Some(&bad)).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(a.body["message"], "Object is not valid");
    let paths: Vec<&str> = a.body["details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["path"].as_str().unwrap())
        .collect();
    assert!(
        paths.contains(&"/upgradeStrategy/minimumHealthCapacity"),
        "{paths:?}"
    );
    assert!(paths.contains(&"/cpus"), "{paths:?}");
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body,
        json!({"apps": []})
    );
}

#[tokio::test]
async fn conflicts_with_other_apps_are_refused() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    let again = api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    assert_eq!(
        again.body,
        json!({"message": "An app with id [/shop/web] already exists."})
    );
    let group = api
        .call("POST", "/v2/apps", Some(r#"{"id": "/shop", "cmd": "x"}"#))
        .await;
    assert_eq!(group.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(group.body["details"][0]["path"], "/id");
    let port = api
        .call(
            "POST",
            "/v2/apps",
            Some(r#"{"id": "/b", "cmd": "x", "portDefinitions": [{"port": 10080}]}"#),
        )
        .await;
    assert_eq!(port.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(port.body["details"][0]["path"], "/portDefinitions/0/port");
    let dep = api
        .call(
            "POST",
            "/v2/apps",
            Some(r#"{"id": "/c", "cmd": "x", "dependencies": ["/nope"]}"#),
        )
        .await;
    assert_eq!(dep.body["details"][0]["path"], "/dependencies/0");
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body["apps"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn malformed_bodies_are_400_413_or_415() {
    let api = Api::new();
    let a = api
        .call("POST", "/v2/apps", Some(r#"{"id": "/x", "cmd": }"#))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.body["message"], "Invalid JSON");
    let why = a.body["details"][0]["errors"][0].as_str().unwrap();
    assert!(why.contains("line 1 column"), "{why}");
    let dup = api
        .call(
            "POST",
            "/v2/apps",
            Some(r#"{"id": "/x", "id": "/y", "cmd": "x"}"#),
        )
        .await;
    assert_eq!(dup.status, StatusCode::BAD_REQUEST, "{}", dup.body);
    let t = api
        .send(
            "POST",
            "/v2/apps",
            Some("text/plain"),
            Body::from(r#"{"id": "/x", "cmd": "x"}"#),
        )
        .await;
    assert_eq!(t.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(t.body["message"].as_str().unwrap().contains("text/plain"));
    let form = api
        .send(
            "PUT",
            "/v2/apps/x",
            Some("application/x-www-form-urlencoded"),
            Body::from("a=b"),
        )
        .await;
    assert_eq!(form.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let huge = format!(r#"{{"id": "/x", "cmd": "{}"}}"#, "a".repeat(MAX_BODY_BYTES));
    let h = api.call("POST", "/v2/apps", Some(&huge)).await;
    assert_eq!(h.status, StatusCode::PAYLOAD_TOO_LARGE);
    // Without a Content-Length (a stream), the limit holds too.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..20).map(|_| Ok("x".repeat(64 * 1024))).collect();
    let s = api
        .send(
            "POST",
            "/v2/apps",
            Some("application/json"),
            Body::from_stream(futures::stream::iter(chunks)),
        )
        .await;
    assert_eq!(s.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body,
        json!({"apps": []})
    );
}

#[tokio::test]
async fn unknown_apps_versions_and_deployments_are_404() {
    let api = Api::new();
    let g = api.call("GET", "/v2/apps/nope", None).await;
    assert_eq!(
        (g.status, g.body),
        (
            StatusCode::NOT_FOUND,
            json!({"message": "App '/nope' does not exist"})
        )
    );
    for (m, uri) in [
        ("GET", "/v2/apps/nope/versions"),
        ("GET", "/v2/apps/nope/tasks"),
        ("DELETE", "/v2/apps/nope"),
        ("POST", "/v2/apps/nope/restart"),
        ("PATCH", "/v2/apps/nope"),
    ] {
        let body = (m == "PATCH").then_some("{}");
        assert_eq!(
            api.call(m, uri, body).await.status,
            StatusCode::NOT_FOUND,
            "{m} {uri}"
        );
    }
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    let v = api
        .call(
            "GET",
            "/v2/apps/shop/web/versions/2001-01-01T00:00:00.000Z",
            None,
        )
        .await;
    assert_eq!(v.status, StatusCode::NOT_FOUND);
    assert!(
        v.body["message"]
            .as_str()
            .unwrap()
            .contains("does not exist in version")
    );
    let v = api
        .call("GET", "/v2/apps/shop/web/versions/yesterday", None)
        .await;
    assert_eq!(v.status, StatusCode::NOT_FOUND);
    api.settle().await;
    let r = api
        .call(
            "PUT",
            "/v2/apps/shop/web",
            Some(r#"{"version": "2001-01-01T00:00:00.000Z"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    let d = api
        .call("DELETE", "/v2/deployments/not-a-deployment", None)
        .await;
    assert_eq!(d.status, StatusCode::NOT_FOUND);
    assert_eq!(
        d.body["message"],
        "DeploymentPlan \"not-a-deployment\" does not exist"
    );
}

#[tokio::test]
async fn bad_arguments_are_refused_with_their_place() {
    let api = Api::new();
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    api.settle().await;
    let r = api
        .call(
            "PUT",
            "/v2/apps/shop/web",
            Some(r#"{"version": "2001-01-01T00:00:00.000Z", "cmd": "x"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(r.body["details"][0]["path"], "/version");
    let r = api
        .call("PUT", "/v2/apps/shop/web", Some(r#"{"version": "soon"}"#))
        .await;
    assert_eq!(
        (r.status, r.body["details"][0]["path"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("/version"))
    );
    let r = api
        .call("PUT", "/v2/apps/shop/web", Some(r#"{"id": "/elsewhere"}"#))
        .await;
    assert_eq!(
        (r.status, r.body["details"][0]["path"].clone()),
        (StatusCode::UNPROCESSABLE_ENTITY, json!("/id"))
    );
    let f = api
        .call("POST", "/v2/apps/shop/web/restart?force=yes", None)
        .await;
    assert_eq!(f.status, StatusCode::BAD_REQUEST);
    assert!(f.body["message"].as_str().unwrap().contains("force"));
    let id = api.call("GET", "/v2/apps/Shop_Web", None).await;
    assert_eq!(id.status, StatusCode::BAD_REQUEST);
    let l = api.call("GET", "/v2/apps?label=a==b", None).await;
    assert_eq!(l.status, StatusCode::BAD_REQUEST);
    let s = api.call("GET", "/v2/tasks?status=lost", None).await;
    assert_eq!(s.status, StatusCode::BAD_REQUEST);
    let x = api.call("POST", "/v2/apps/shop/web/scale", None).await;
    assert_eq!(x.status, StatusCode::NOT_FOUND);
    assert_eq!(
        api.call("GET", "/v2/groups", None).await.status,
        StatusCode::NOT_FOUND
    );
    // Nothing changed.
    assert_eq!(
        api.call("GET", "/v2/deployments", None).await.body,
        json!([])
    );
    let v = api.call("GET", "/v2/apps/shop/web/versions", None).await;
    assert_eq!(v.body["versions"].as_array().unwrap().len(), 1);
}

/// The issue's list of bad definitions, each through the API: 422 with the
/// field's path, and nothing created.
#[tokio::test]
async fn each_kind_of_bad_definition_names_its_field() {
    let api = Api::new();
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "an unknown field",
            with(MARATHON_APP, |v| v["replicas"] = json!(3)),
            "/replicas",
        ),
        (
            "a wrong type",
            with(MARATHON_APP, |v| v["instances"] = json!("three")),
            "/instances",
        ),
        (
            "negative resources",
            with(MARATHON_APP, |v| v["mem"] = json!(-128)),
            "/mem",
        ),
        (
            "an impossible constraint",
            with(MARATHON_APP, |v| {
                v["constraints"] = json!([["hostname", "MAX_PER", "zero"]]);
            }),
            "/constraints/0",
        ),
        (
            "an unknown constraint operator",
            with(MARATHON_APP, |v| {
                v["constraints"] = json!([["hostname", "NEAR"]]);
            }),
            "/constraints/0",
        ),
        (
            "minimumHealthCapacity below 0",
            with(MARATHON_APP, |v| {
                v["upgradeStrategy"]["minimumHealthCapacity"] = json!(-0.1);
            }),
            "/upgradeStrategy/minimumHealthCapacity",
        ),
        (
            "maximumOverCapacity above 1",
            with(MARATHON_APP, |v| {
                v["upgradeStrategy"]["maximumOverCapacity"] = json!(1.5);
            }),
            "/upgradeStrategy/maximumOverCapacity",
        ),
    ];
    for (what, body, path) in &cases {
        let a = api.call("POST", "/v2/apps", Some(body)).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{what}: {}",
            a.body
        );
        let paths: Vec<&str> = a.body["details"]
            .as_array()
            .map(|d| d.iter().filter_map(|d| d["path"].as_str()).collect())
            .unwrap_or_default();
        // The path names the field, or a part of it.
        assert!(
            paths.iter().any(|p| p.starts_with(path)),
            "{what}: {paths:?} lacks {path}"
        );
    }
    // NaN cannot be written in JSON, but YAML has it.
    let nan = api
        .send(
            "POST",
            "/v2/apps",
            Some("application/yaml"),
            Body::from("id: /nan\ncmd: sleep 1\ncpus: .nan\nmem: 32\n"),
        )
        .await;
    assert_eq!(nan.status, StatusCode::UNPROCESSABLE_ENTITY, "{}", nan.body);
    assert_eq!(nan.body["details"][0]["path"], "/cpus", "{}", nan.body);
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body,
        json!({"apps": []})
    );
    // A rollback to a version the app never had.
    api.call("POST", "/v2/apps", Some(MARATHON_APP)).await;
    let before = api.call("GET", "/v2/apps/shop/web", None).await.body;
    let deployments = api.call("GET", "/v2/deployments", None).await.body;
    let r = api
        .call(
            "PUT",
            "/v2/apps/shop/web",
            Some(r#"{"version": "2001-01-01T00:00:00.000Z"}"#),
        )
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.body);
    assert_eq!(r.body["details"][0]["path"], "/version", "{}", r.body);
    assert!(
        r.body["details"][0]["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains("2001-01-01")),
        "{}",
        r.body
    );
    assert_eq!(
        api.call("GET", "/v2/apps/shop/web", None).await.body,
        before
    );
    let v = api.call("GET", "/v2/apps/shop/web/versions", None).await;
    assert_eq!(v.body["versions"].as_array().unwrap().len(), 1);
    assert_eq!(
        api.call("GET", "/v2/deployments", None).await.body,
        deployments
    );
}

/// Constraints that no cluster can meet are refused at `/constraints`,
/// each contradiction named, and nothing is created.
#[tokio::test]
async fn contradictory_constraints_are_refused() {
    let api = Api::new();
    let cases = [
        (
            json!([["rack", "CLUSTER", "a"], ["rack", "CLUSTER", "b"]]),
            1,
            "\"a\" and \"b\"",
        ),
        (
            json!([["os", "IS", "linux"], ["os", "IS", "bsd"]]),
            1,
            "\"linux\" and \"bsd\"",
        ),
        (
            json!([["hostname", "CLUSTER"], ["hostname", "UNIQUE"]]),
            2,
            "own",
        ),
        (
            json!([["rack", "IS", "a"], ["rack", "UNLIKE", "a|b"]]),
            1,
            "matches",
        ),
        (
            json!([["rack", "CLUSTER", "c"], ["rack", "LIKE", "a|b"]]),
            1,
            "does not match",
        ),
        (
            json!([["zone", "MAX_PER", "2"], ["zone", "CLUSTER", "z1"]]),
            3,
            "2 per value",
        ),
    ];
    for (constraints, instances, says) in cases {
        let body = with(MARATHON_APP, |v| {
            v["constraints"] = constraints.clone();
            v["instances"] = json!(instances);
        });
        let a = api.call("POST", "/v2/apps", Some(&body)).await;
        assert_eq!(
            a.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{constraints}: {}",
            a.body
        );
        assert_eq!(a.body["details"][0]["path"], "/constraints", "{}", a.body);
        let error = a.body["details"][0]["errors"][0]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains(says), "{constraints}: {error}");
        assert!(
            error.starts_with("0 (") && error.contains(" and 1 ("),
            "{error}"
        );
    }
    assert_eq!(
        api.call("GET", "/v2/apps", None).await.body,
        json!({"apps": []})
    );
    // The same pairs where a cluster can meet them are taken: one instance
    // on one host, or on one zone holding at most 2.
    for (constraints, instances) in [
        (json!([["hostname", "CLUSTER"], ["hostname", "UNIQUE"]]), 1),
        (
            json!([["zone", "MAX_PER", "2"], ["zone", "CLUSTER", "z1"]]),
            2,
        ),
        (
            json!([["rack", "CLUSTER", "a"], ["rack", "LIKE", "a|b"]]),
            3,
        ),
        (
            json!([["rack", "CLUSTER", "a"], ["hostname", "CLUSTER", "b"]]),
            3,
        ),
    ] {
        let body = with(MARATHON_APP, |v| {
            v["constraints"] = constraints.clone();
            v["instances"] = json!(instances);
        });
        let a = api.call("POST", "/v2/apps", Some(&body)).await;
        assert_eq!(a.status, StatusCode::CREATED, "{constraints}: {}", a.body);
        api.settle().await;
        let d = api
            .call("DELETE", "/v2/apps/shop/web?force=true", None)
            .await;
        assert_eq!(d.status, StatusCode::OK, "{}", d.body);
        api.settle().await;
    }
}
