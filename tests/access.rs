//! Who may write through the client port, and HTTPS on it.

mod common;

use common::{Client, TestNode};
use raft_discovery::peer::certs;

/// A client of `node` whose connections come from `source`.
fn client_from(node: &TestNode, source: [u8; 4]) -> Client {
    Client::from_source(&node.base, source)
}

#[tokio::test]
async fn writes_from_outside_allow_write_from_get_403_and_reads_still_work() {
    let node = TestNode::start_with(1000, |c| {
        c.security.allow_write_from = vec!["127.0.0.1/32".into()];
    })
    .await;
    let inside = client_from(&node, [127, 0, 0, 1]);
    let outside = client_from(&node, [127, 0, 0, 2]);
    assert_eq!(
        inside.register("acl.app", "sh001", "h1", "1").await.code(),
        0
    );

    let key = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "acl.app"),
        ("hostname", "h1"),
    ];
    let register = outside.register("acl.app", "sh001", "h2", "1").await;
    let renew = outside.post("/discovery/renew", &key).await;
    let cancel = outside.post("/discovery/cancel", &key).await;
    let mut set_form = key.to_vec();
    set_form.push(("status", "2"));
    let set = outside.post("/discovery/set", &set_form).await;
    for (what, answer) in [
        ("register", register),
        ("renew", renew),
        ("cancel", cancel),
        ("set", set),
    ] {
        let body = answer.json();
        assert_eq!(body["code"], -403, "{what}: {}", answer.text);
        let message = body["message"].as_str().unwrap();
        // It names the rule, never the networks it lists.
        assert!(
            message.contains("127.0.0.2")
                && message.contains("allow_write_from")
                && !message.contains("127.0.0.1/32"),
            "{what}: {message}"
        );
    }

    // A browser's form post from another site is refused, even from an
    // allowed address; one from the node's own page is not.
    let form = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "form.app"),
        ("hostname", "h3"),
        ("status", "1"),
        ("addrs", "http://10.0.0.3:80"),
    ];
    let host = node.base.trim_start_matches("http://").to_string();
    for (header, value, code) in [
        ("origin", "http://evil.example".to_string(), -403),
        ("referer", "https://evil.example/page".to_string(), -403),
        ("origin", format!("http://{host}"), 0),
    ] {
        let answer: serde_json::Value = inside
            .http
            .post(format!("{}/discovery/register", node.base))
            .header(header, &value)
            .form(&form)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(answer["code"], code, "{header}: {value}: {answer}");
    }

    // Reads and polls from the same address are served, and show that none
    // of its writes went through.
    let fetched = outside.fetch("acl.app", 3).await.json();
    let instances = fetched["data"]["instances"]["sh001"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{fetched}");
    assert_eq!(instances[0]["hostname"], "h1");
    assert_eq!(instances[0]["status"], 1);
    let polled = outside
        .get("/discovery/polls?env=dev&hostname=me&appid=acl.app&latest_timestamp=0")
        .await;
    assert_eq!(polled.code(), 0, "{}", polled.text);
    node.stop().await;
}

#[tokio::test]
async fn the_client_port_serves_https_when_given_a_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let ca = certs::new_ca("client CA", 30).unwrap();
    let api = raft_discovery::peer::identity::Identity::Node {
        zone: "sh001".into(),
        id: 1,
    };
    let issued = certs::node_cert(&ca, &api, "api", &["127.0.0.1".into()], 30).unwrap();
    let (cert, key) = certs::write(dir.path(), "api", &issued).unwrap();
    let node = TestNode::start_https(1000, &ca.cert, |c| {
        c.tls.client_cert = cert.clone();
        c.tls.client_key = key.clone();
    })
    .await;
    let https = node.client();
    assert!(https.base.starts_with("https://"));
    let port = node
        .config
        .node
        .listen
        .rsplit_once(':')
        .unwrap()
        .1
        .to_string();
    assert_eq!(
        https.register("tls.app", "sh001", "h1", "1").await.code(),
        0
    );
    assert_eq!(https.fetch("tls.app", 1).await.code(), 0);
    // Plain HTTP on the same port gets no discovery answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{port}/discovery/fetch?env=dev&appid=tls.app&status=1"
        ))
        .send()
        .await;
    assert!(
        plain.is_err() || !plain.unwrap().status().is_success(),
        "plain HTTP was served"
    );
    node.stop().await;
}
