use super::*;

#[test]
fn hop_by_hop_and_connection_named_headers_go() {
    let mut h = HeaderMap::new();
    h.insert(
        "connection",
        HeaderValue::from_static("keep-alive, x-secret"),
    );
    h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
    h.insert("x-secret", HeaderValue::from_static("1"));
    h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
    h.insert("upgrade", HeaderValue::from_static("websocket"));
    h.insert("content-type", HeaderValue::from_static("text/plain"));
    strip_hop_by_hop(&mut h);
    assert_eq!(h.len(), 1);
    assert!(h.contains_key("content-type"));
}

#[test]
fn forwarded_headers_append_the_client() {
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("shop.example"));
    h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
    add_forwarded(&mut h, "192.168.1.2:5000".parse().unwrap());
    assert_eq!(h["x-forwarded-for"], "10.0.0.1, 192.168.1.2");
    assert_eq!(
        h["forwarded"],
        "for=192.168.1.2;proto=http;host=\"shop.example\""
    );
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "shop.example");

    let mut h = HeaderMap::new();
    h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
    h.insert("x-forwarded-host", HeaderValue::from_static("spoofed"));
    add_forwarded(&mut h, "[::1]:5000".parse().unwrap());
    assert_eq!(h["forwarded"], "for=\"[::1]\";proto=http");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert!(!h.contains_key("x-forwarded-host"));
}

#[test]
fn only_bodiless_safe_requests_replay() {
    assert!(replayable(&http::Method::GET, true));
    assert!(replayable(&http::Method::HEAD, true));
    assert!(!replayable(&http::Method::GET, false));
    assert!(!replayable(&http::Method::POST, true));
    assert!(!replayable(&http::Method::DELETE, true));
}
