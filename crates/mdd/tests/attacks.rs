//! mdd under attack, at scale and through faults, as its worst users and worst days would
//! have it: each test is a defect an attacker or a bad day found, on real server processes on
//! loopback.

mod common;
use common::{ADMIN, TestServer};

/// After sign-in only a path on this server is followed: `next=/<TAB>/evil.example/x` went to
/// `Location: /<TAB>/evil.example/x`, which browsers follow to another site; a `next` with
/// CR/LF made the answer carry neither cookie nor location.
#[tokio::test]
async fn sign_in_never_redirects_to_another_site() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = TestServer::start(dir.path(), &[]).await;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client");
    for (next, expected) in [
        ("/%09/evil.example/x", "/"),
        ("/%0d%0aSet-Cookie:%20x=1", "/"),
        ("%2F%2Fevil.example", "/"),
        ("%2F%5Cevil.example", "/"),
        ("%2Fdeployments%2Fams1", "/deployments/ams1"),
    ] {
        let response = http
            .post(format!("{}/login", server.url))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={ADMIN}&next={next}"))
            .send()
            .await
            .expect("sign in");
        assert_eq!(response.status(), 303, "{next}");
        let headers = response.headers();
        assert_eq!(
            headers.get("location").and_then(|v| v.to_str().ok()),
            Some(expected),
            "{next}"
        );
        assert!(
            headers
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|c| c.starts_with("mdd_session=")),
            "signed in: {next}"
        );
    }
    server.stop().await;
}
