use std::collections::HashMap;

use axum::http::Request as HttpRequest;
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

use super::*;

struct Pipelines(HashMap<u64, PipelineAccess>);

impl Access for Pipelines {
    fn pipeline(&self, id: u64) -> Option<PipelineAccess> {
        self.0.get(&id).cloned()
    }
}

fn setup(max_upload: u64) -> (tempfile::TempDir, FileStore, Router) {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path(), max_upload).unwrap();
    let mut pipelines = HashMap::new();
    // Pipelines 1 and 2 are one project; 3 is another repository whose
    // project has the same name; 4 a project whose key is longer than a
    // file name.
    let long = format!("/src/{}/web", "d".repeat(300));
    for (id, project_key) in [
        (1, "/src/a/web"),
        (2, "/src/a/web"),
        (3, "/src/b/web"),
        (4, long.as_str()),
    ] {
        pipelines.insert(
            id,
            PipelineAccess {
                token: format!("secret-{id}"),
                project_key: project_key.into(),
            },
        );
    }
    let router = router(store.clone(), Arc::new(Pipelines(pipelines)));
    (dir, store, router)
}

async fn call(router: &Router, method: &str, uri: &str, body: Vec<u8>) -> (StatusCode, Vec<u8>) {
    let request = HttpRequest::builder()
        .method(method)
        .uri(uri)
        .body(Body::from(body))
        .unwrap();
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    (status, bytes.to_vec())
}

#[tokio::test]
async fn serves_the_source_only_with_the_pipelines_token() {
    let (_dir, store, router) = setup(1 << 20);
    std::fs::write(store.source(1), b"source bytes").unwrap();
    let (status, body) = call(&router, "GET", &urls::source(1, "secret-1"), vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"source bytes");
    let (status, _) = call(&router, "GET", &urls::source(1, "secret-2"), vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "another pipeline's token");
    let (status, _) = call(&router, "GET", "/ci/v1/files/sources/1", vec![]).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "no token");
    let (status, _) = call(&router, "GET", &urls::source(9, "secret-1"), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no such pipeline");
    let (status, _) = call(&router, "GET", &urls::source(2, "secret-2"), vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "no archive yet");
}

#[tokio::test]
async fn artifacts_round_trip_and_replace_the_previous_upload() {
    let (_dir, store, router) = setup(1 << 20);
    let url = urls::artifacts(1, "build: [linux, x86]", "secret-1").unwrap();
    let (status, _) = call(&router, "GET", &url, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, body) = call(&router, "PUT", &url, b"first".to_vec()).await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (status, _) = call(&router, "PUT", &url, b"second".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&router, "GET", &url, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"second");
    // The file is where the store says, under its escaped name.
    let path = store.artifacts(1, "build: [linux, x86]").unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
    // Another pipeline's token cannot write it.
    let other = urls::artifacts(1, "build: [linux, x86]", "secret-2").unwrap();
    let (status, _) = call(&router, "PUT", &other, b"evil".to_vec()).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(std::fs::read(&path).unwrap(), b"second");
}

#[tokio::test]
async fn oversized_uploads_are_refused_and_leave_the_old_file() {
    let (dir, store, router) = setup(8);
    let url = urls::artifacts(1, "job", "secret-1").unwrap();
    let (status, _) = call(&router, "PUT", &url, b"small".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&router, "PUT", &url, vec![b'x'; 100]).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(String::from_utf8_lossy(&body).contains("larger than 8 bytes"));
    assert_eq!(
        std::fs::read(store.artifacts(1, "job").unwrap()).unwrap(),
        b"small"
    );
    let leftovers = std::fs::read_dir(dir.path().join("tmp")).unwrap().count();
    assert_eq!(leftovers, 0, "the temporary file was removed");
}

#[tokio::test]
async fn caches_are_shared_by_a_projects_pipelines_only() {
    let (_dir, _store, router) = setup(1 << 20);
    let put = urls::cache(1, "cargo-main", "secret-1").unwrap();
    let (status, _) = call(&router, "PUT", &put, b"registry".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    // Pipeline 2 is the same project: it sees the cache.
    let get2 = urls::cache(2, "cargo-main", "secret-2").unwrap();
    let (status, body) = call(&router, "GET", &get2, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"registry");
    // Pipeline 3 is another repository whose project is also named `web`:
    // same key, different cache; what it stores does not reach pipeline 2.
    let get3 = urls::cache(3, "cargo-main", "secret-3").unwrap();
    let (status, _) = call(&router, "GET", &get3, vec![]).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = call(&router, "PUT", &get3, b"poison".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&router, "GET", &get2, vec![]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, b"registry");
    // A project key of any length has a cache directory.
    let get4 = urls::cache(4, "cargo-main", "secret-4").unwrap();
    let (status, _) = call(&router, "PUT", &get4, b"long".to_vec()).await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = call(&router, "GET", &get4, vec![]).await;
    assert_eq!((status, body.as_slice()), (StatusCode::OK, &b"long"[..]));
}

#[test]
fn cache_directories_are_named_by_the_project_keys_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path(), 1).unwrap();
    let a = store.cache("/src/a/web", "k").unwrap();
    let b = store.cache("/src/b/web", "k").unwrap();
    assert_ne!(a.parent(), b.parent());
    let name = a.parent().unwrap().file_name().unwrap().to_string_lossy();
    assert_eq!(name.len(), 64, "{name}");
    assert!(name.bytes().all(|c| c.is_ascii_hexdigit()), "{name}");
    assert_eq!(a.file_name().unwrap(), "k.tar.gz");
    assert_eq!(store.cache("/src/a/web", "k").unwrap(), a, "stable");
}

#[test]
fn file_names_cannot_escape_or_collide() {
    assert_eq!(file_name("x", "build").unwrap(), "build");
    assert_eq!(file_name("x", "..").unwrap(), "%2E%2E");
    assert_eq!(file_name("x", "a/b").unwrap(), "a%2Fb");
    assert_ne!(
        file_name("x", "a/b").unwrap(),
        file_name("x", "a%2Fb").unwrap(),
        "the escape character is escaped too"
    );
    assert!(file_name("x", "").is_err());
    let long = "k".repeat(256);
    assert_eq!(
        file_name("a cache key", &long).unwrap_err().to_string(),
        "a cache key must have 1 to 255 bytes"
    );
}

#[test]
fn removing_a_pipeline_removes_its_files_only() {
    let (_dir, store, _router) = setup(1 << 20);
    for p in [1, 2] {
        std::fs::write(store.source(p), b"s").unwrap();
        let a = store.artifacts(p, "job").unwrap();
        std::fs::create_dir_all(a.parent().unwrap()).unwrap();
        std::fs::write(&a, b"a").unwrap();
    }
    store.remove_pipeline(1).unwrap();
    assert!(!store.source(1).exists());
    assert!(!store.artifacts(1, "job").unwrap().exists());
    assert!(store.source(2).exists());
    assert!(store.artifacts(2, "job").unwrap().exists());
    store.remove_pipeline(1).unwrap();
}
