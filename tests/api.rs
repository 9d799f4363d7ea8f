//! The discovery API over real HTTP against a started node: every endpoint
//! and every error case of the spec.

mod common;

use common::TestNode;
use serde_json::json;

#[tokio::test]
async fn register_then_fetch_answers_the_original_shape() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let a = c
        .post(
            "/discovery/register",
            &[
                ("region", "sh"),
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "demo.app"),
                ("hostname", "host1"),
                ("status", "1"),
                ("version", "v1"),
                ("addrs", "grpc://127.0.0.1:9000"),
                ("addrs", "http://127.0.0.1:8000"),
                ("metadata", r#"{"weight":"10","color":"red"}"#),
            ],
        )
        .await;
    assert_eq!(a.status, 200);
    assert_eq!(a.text, r#"{"code":0,"message":"0","ttl":1}"#);
    assert_eq!(a.headers["content-type"], "application/json; charset=utf-8");
    assert_eq!(a.headers["kratos-status-code"], "0");

    let f = c.fetch("demo.app", 1).await;
    assert_eq!(f.headers["kratos-status-code"], "0");
    let v = f.json();
    let i = &v["data"]["instances"]["sh001"][0];
    assert_eq!(
        i["addrs"],
        json!(["grpc://127.0.0.1:9000", "http://127.0.0.1:8000"])
    );
    assert_eq!(i["metadata"], json!({"color": "red", "weight": "10"}));
    assert_eq!(i["status"], 1);
    assert_eq!(i["latest_timestamp"], v["data"]["latest_timestamp"]);
    // Field order is the original's: the body starts the same way.
    assert!(f.text.starts_with(
        r#"{"code":0,"message":"0","ttl":1,"data":{"instances":{"sh001":[{"region":"sh","zone":"sh001","env":"dev","appid":"demo.app","hostname":"host1","addrs":"#
    ));
    let keys: Vec<&str> = [
        "reg_timestamp",
        "up_timestamp",
        "renew_timestamp",
        "dirty_timestamp",
        "latest_timestamp",
    ]
    .to_vec();
    let positions: Vec<usize> = keys.iter().map(|k| f.text.find(k).unwrap()).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]));
    node.stop().await;
}

#[tokio::test]
async fn list_parameters_come_repeated_comma_joined_merged_or_as_json() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    // Comma-joined addrs are split (the original kept them as one).
    let a = c
        .post(
            "/discovery/register",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "comma.app"),
                ("hostname", "h2"),
                ("status", "1"),
                ("addrs", "grpc://127.0.0.1:9001,http://127.0.0.1:8001"),
            ],
        )
        .await;
    assert_eq!(a.code(), 0);
    let v = c.fetch("comma.app", 1).await.json();
    assert_eq!(
        v["data"]["instances"]["sh001"][0]["addrs"],
        json!(["grpc://127.0.0.1:9001", "http://127.0.0.1:8001"])
    );

    // Query string and form body merge on a POST.
    let r = c
        .http
        .post(node.url("/discovery/register?addrs=grpc://127.0.0.1:9701"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("zone=sh001&env=dev&appid=merge.app&hostname=m1&status=1&addrs=http://127.0.0.1:8701")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"code":0,"message":"0","ttl":1}"#
    );
    let v = c.fetch("merge.app", 1).await.json();
    assert_eq!(
        v["data"]["instances"]["sh001"][0]["addrs"],
        json!(["grpc://127.0.0.1:9701", "http://127.0.0.1:8701"])
    );

    // A JSON body: lists as arrays, metadata as a JSON string.
    let r = c
        .http
        .post(node.url("/discovery/register"))
        .json(&json!({"zone":"sh001","env":"dev","appid":"json.app","hostname":"j1","status":1,
                      "addrs":["grpc://127.0.0.1:9601","http://127.0.0.1:8601"],"metadata":"{\"weight\":\"5\"}"}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"code":0,"message":"0","ttl":1}"#
    );
    let v = c.fetch("json.app", 1).await.json();
    let i = &v["data"]["instances"]["sh001"][0];
    assert_eq!(i["addrs"].as_array().unwrap().len(), 2);
    assert_eq!(i["metadata"], json!({"weight": "5"}));

    // Params entirely in the query string of a POST.
    let r = c
        .http
        .post(node.url(
            "/discovery/register?zone=sh001&env=dev&appid=qs.app&hostname=qs1&status=1&addrs=grpc://127.0.0.1:9500",
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"code":0,"message":"0","ttl":1}"#
    );
    assert_eq!(c.fetch("qs.app", 1).await.code(), 0);
    node.stop().await;
}

#[tokio::test]
async fn register_refuses_bad_input_naming_the_parameter() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let full = [
        ("zone", "sh001"),
        ("env", "dev"),
        ("appid", "bad.app"),
        ("hostname", "h"),
        ("status", "1"),
        ("addrs", "grpc://x:1"),
    ];
    for missing in ["zone", "env", "appid", "hostname", "status", "addrs"] {
        let form: Vec<_> = full
            .iter()
            .copied()
            .filter(|(k, _)| *k != missing)
            .collect();
        let a = c.post("/discovery/register", &form).await;
        assert_eq!(a.code(), -400, "without {missing}: {}", a.text);
        assert_eq!(a.headers["kratos-status-code"], "-400");
        let message = a.json()["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with(missing),
            "message {message:?} names {missing}"
        );
    }
    for (status, _) in [("0", ()), ("3", ()), ("up", ())] {
        let mut form = full.to_vec();
        form[4] = ("status", status);
        let a = c.post("/discovery/register", &form).await;
        assert_eq!(a.code(), -400, "status {status}");
        assert!(a.json()["message"].as_str().unwrap().starts_with("status"));
    }
    for metadata in ["{not json", r#"{"a":{"nested":1}}"#, "[1,2]"] {
        let mut form = full.to_vec();
        form.push(("metadata", metadata));
        let a = c.post("/discovery/register", &form).await;
        assert_eq!(a.code(), -400, "metadata {metadata}");
        assert!(a.json()["message"]
            .as_str()
            .unwrap()
            .starts_with("metadata"));
    }
    let mut form = full.to_vec();
    form[2] = ("appid", "infra.discovery");
    assert_eq!(c.post("/discovery/register", &form).await.code(), -400);
    // Nothing of the refused registrations was applied.
    assert_eq!(c.fetch("bad.app", 3).await.code(), -404);
    let r = c
        .http
        .post(node.url("/discovery/register"))
        .header("content-type", "application/json")
        .body("[1]")
        .send()
        .await
        .unwrap();
    assert!(r.text().await.unwrap().contains("-400"));
    node.stop().await;
}

#[tokio::test]
async fn metadata_numbers_are_kept_as_text() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let a = c
        .post(
            "/discovery/register",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "meta.app"),
                ("hostname", "m1"),
                ("status", "1"),
                ("addrs", "grpc://127.0.0.1:9400"),
                ("metadata", r#"{"weight":10,"x":"y"}"#),
            ],
        )
        .await;
    assert_eq!(a.code(), 0);
    let v = c.fetch("meta.app", 1).await.json();
    assert_eq!(
        v["data"]["instances"]["sh001"][0]["metadata"],
        json!({"weight":"10","x":"y"})
    );
    node.stop().await;
}

#[tokio::test]
async fn renew_answers_the_instance_or_an_exact_404() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    let before = c.fetch("demo.app", 1).await.json();
    let form = |host: &'static str, zone: &'static str, app: &'static str| {
        vec![
            ("zone", zone),
            ("env", "dev"),
            ("appid", app),
            ("hostname", host),
        ]
    };
    let a = c
        .post("/discovery/renew", &form("host1", "sh001", "demo.app"))
        .await;
    assert_eq!(a.code(), 0);
    let i = &a.json()["data"];
    assert_eq!(i["hostname"], "host1");
    assert!(i["renew_timestamp"].as_i64() > i["reg_timestamp"].as_i64());
    // A renew does not move the app's timestamp.
    assert_eq!(
        c.fetch("demo.app", 1).await.json()["data"]["latest_timestamp"],
        before["data"]["latest_timestamp"]
    );

    let unknown_host = c
        .post("/discovery/renew", &form("nohost", "sh001", "demo.app"))
        .await;
    assert_eq!(unknown_host.code(), -404);
    assert_eq!(unknown_host.headers["kratos-status-code"], "-404");
    assert_eq!(unknown_host.json()["data"]["hostname"], "");
    assert_eq!(unknown_host.json()["data"]["status"], 0);
    let wrong_zone = c
        .post("/discovery/renew", &form("host1", "sh002", "demo.app"))
        .await;
    assert_eq!(wrong_zone.code(), -404);
    let unknown_app = c
        .post("/discovery/renew", &form("host1", "sh001", "no.such.app"))
        .await;
    assert_eq!(
        unknown_app.text,
        r#"{"code":-404,"message":"-404","ttl":1,"data":null}"#
    );
    let missing = c
        .post(
            "/discovery/renew",
            &[("zone", "sh001"), ("env", "dev"), ("appid", "demo.app")],
        )
        .await;
    assert_eq!(missing.code(), -400);
    assert!(missing.json()["message"]
        .as_str()
        .unwrap()
        .starts_with("hostname"));
    node.stop().await;
}

#[tokio::test]
async fn cancel_removes_instances_zones_and_apps() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    c.register("demo.app", "sh001", "host2", "1").await;
    let form = |host: &'static str| {
        vec![
            ("zone", "sh001"),
            ("env", "dev"),
            ("appid", "demo.app"),
            ("hostname", host),
        ]
    };
    assert_eq!(
        c.post("/discovery/cancel", &form("host2")).await.text,
        r#"{"code":0,"message":"0","ttl":1}"#
    );
    assert_eq!(
        c.post("/discovery/cancel", &form("host2")).await.text,
        r#"{"code":-404,"message":"-404","ttl":1}"#
    );
    assert_eq!(
        c.post("/discovery/renew", &form("host2")).await.code(),
        -404
    );
    let v = c.fetch("demo.app", 3).await.json();
    assert_eq!(v["data"]["instances"]["sh001"].as_array().unwrap().len(), 1);
    assert_eq!(c.post("/discovery/cancel", &form("host1")).await.code(), 0);
    assert_eq!(
        c.fetch("demo.app", 3).await.text,
        r#"{"code":-404,"message":"-404","ttl":1,"data":null}"#
    );
    assert_eq!(
        c.post("/discovery/cancel", &[("zone", "sh001")])
            .await
            .code(),
        -400
    );
    node.stop().await;
}

#[tokio::test]
async fn fetch_filters_by_status_mask_and_zone() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "up1", "1").await;
    c.register("demo.app", "sh001", "wait1", "2").await;
    c.register("demo.app", "sh002", "up2", "1").await;
    c.register("down.app", "sh001", "d1", "2").await;

    let hosts = |v: &serde_json::Value, zone: &str| -> Vec<String> {
        v["data"]["instances"][zone]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["hostname"].as_str().unwrap().to_string())
            .collect()
    };
    let up = c.fetch("demo.app", 1).await.json();
    assert_eq!(hosts(&up, "sh001"), vec!["up1"]);
    assert_eq!(hosts(&up, "sh002"), vec!["up2"]);
    let waiting = c.fetch("demo.app", 2).await.json();
    assert_eq!(hosts(&waiting, "sh001"), vec!["wait1"]);
    assert_eq!(hosts(&waiting, "sh002"), Vec::<String>::new());
    let both = c.fetch("demo.app", 3).await.json();
    assert_eq!(hosts(&both, "sh001"), vec!["up1", "wait1"]);

    let zoned = c
        .get("/discovery/fetch?env=dev&appid=demo.app&status=1&zone=sh002")
        .await
        .json();
    assert_eq!(hosts(&zoned, "sh002"), vec!["up2"]);
    assert!(zoned["data"]["instances"].get("sh001").is_none());

    let nozone = c
        .get("/discovery/fetch?env=dev&appid=demo.app&status=1&zone=nozone")
        .await;
    assert_eq!(nozone.code(), -404);
    assert_eq!(nozone.json()["data"]["instances"], json!({}));
    assert_eq!(
        nozone.json()["data"]["latest_timestamp"],
        both["data"]["latest_timestamp"]
    );

    // All instances waiting: the zone is there, empty.
    let down = c.fetch("down.app", 1).await.json();
    assert_eq!(down["code"], 0);
    assert_eq!(down["data"]["instances"], json!({"sh001": []}));

    assert_eq!(
        c.fetch("no.such.app", 1).await.text,
        r#"{"code":-404,"message":"-404","ttl":1,"data":null}"#
    );
    for (query, param) in [
        ("env=dev&appid=demo.app", "status"),
        ("appid=demo.app&status=1", "env"),
        ("env=dev&status=1", "appid"),
        ("env=dev&appid=demo.app&status=4", "status"),
        ("env=dev&appid=demo.app&status=x", "status"),
    ] {
        let a = c.get(&format!("/discovery/fetch?{query}")).await;
        assert_eq!(a.code(), -400, "{query}");
        assert!(
            a.json()["message"].as_str().unwrap().starts_with(param),
            "{query}: {}",
            a.text
        );
    }
    // Other envs are other apps.
    assert_eq!(
        c.get("/discovery/fetch?env=prod&appid=demo.app&status=1")
            .await
            .code(),
        -404
    );
    node.stop().await;
}

#[tokio::test]
async fn fetchs_answers_the_known_apps() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("a.app", "sh001", "a1", "1").await;
    c.register("b.app", "sh001", "b1", "1").await;
    let repeated = c
        .get("/discovery/fetchs?env=dev&status=1&appid=a.app&appid=b.app")
        .await
        .json();
    assert_eq!(repeated["code"], 0);
    let data = repeated["data"].as_object().unwrap();
    assert_eq!(data.keys().collect::<Vec<_>>(), vec!["a.app", "b.app"]);
    assert_eq!(data["a.app"]["instances"]["sh001"][0]["hostname"], "a1");
    let joined = c
        .get("/discovery/fetchs?env=dev&status=1&appid=a.app,b.app")
        .await
        .json();
    assert_eq!(joined["data"], repeated["data"]);
    let unknown = c
        .get("/discovery/fetchs?env=dev&status=1&appid=a.app&appid=no.such.app")
        .await
        .json();
    assert_eq!(
        unknown["data"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        vec!["a.app"]
    );
    let with_nodes = c
        .get("/discovery/fetchs?env=dev&status=1&appid=a.app&appid=infra.discovery")
        .await
        .json();
    assert_eq!(
        with_nodes["data"]["infra.discovery"]["instances"]["sh001"][0]["hostname"],
        "test1"
    );
    assert_eq!(
        c.get("/discovery/fetchs?env=dev&status=1").await.code(),
        -400
    );
    node.stop().await;
}

#[tokio::test]
async fn fetch_all_lists_every_instance_by_appid() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("a.app", "sh001", "a1", "1").await;
    c.register("a.app", "sh002", "a2", "2").await;
    c.register("b.app", "sh001", "b1", "1").await;
    let v = c.get("/discovery/fetch/all").await.json();
    assert_eq!(v["code"], 0);
    assert_eq!(v["data"]["a.app"].as_array().unwrap().len(), 2);
    assert_eq!(v["data"]["b.app"].as_array().unwrap().len(), 1);
    assert_eq!(
        v["data"]["infra.discovery"][0]["addrs"],
        json!([format!("http://{}", node.config.node.advertise)])
    );
    node.stop().await;
}

#[tokio::test]
async fn set_changes_status_and_metadata_all_or_nothing() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    c.register("demo.app", "sh001", "host2", "1").await;
    let before = c.latest("demo.app").await;
    let base = [("zone", "sh001"), ("env", "dev"), ("appid", "demo.app")];
    let with = |extra: &[(&'static str, &'static str)]| {
        let mut f = base.to_vec();
        f.extend_from_slice(extra);
        f
    };

    let a = c
        .post(
            "/discovery/set",
            &with(&[("hostname", "host1"), ("status", "2")]),
        )
        .await;
    assert_eq!(a.text, r#"{"code":0,"message":"0","ttl":1}"#);
    let after = c.latest("demo.app").await;
    assert!(after > before, "set moves the app's timestamp");
    let up = c.fetch("demo.app", 1).await.json();
    assert_eq!(
        up["data"]["instances"]["sh001"].as_array().unwrap().len(),
        1
    );

    let a = c
        .post(
            "/discovery/set",
            &with(&[
                ("hostname", "host1"),
                ("hostname", "host2"),
                ("status", "1"),
                ("status", "1"),
                ("metadata", r#"{"weight":"20"}"#),
                ("metadata", r#"{"weight":"30"}"#),
            ]),
        )
        .await;
    assert_eq!(a.code(), 0);
    let v = c.fetch("demo.app", 1).await.json();
    let zone = v["data"]["instances"]["sh001"].as_array().unwrap().clone();
    assert_eq!(zone.len(), 2);
    assert_eq!(zone[0]["metadata"], json!({"weight":"20"}));
    assert_eq!(zone[1]["metadata"], json!({"weight":"30"}));
    let stamp = c.latest("demo.app").await;

    // Each refusal changes nothing.
    for (extra, param) in [
        (
            vec![
                ("hostname", "host1"),
                ("hostname", "nohost"),
                ("status", "2"),
                ("status", "2"),
            ],
            "hostname",
        ),
        (
            vec![
                ("hostname", "host1"),
                ("hostname", "host2"),
                ("status", "2"),
            ],
            "status",
        ),
        (vec![("hostname", "host1"), ("status", "5")], "status"),
        (
            vec![("hostname", "host1"), ("metadata", "{bad")],
            "metadata",
        ),
        (vec![], "hostname"),
    ] {
        let a = c.post("/discovery/set", &with(&extra)).await;
        assert_eq!(a.code(), -400, "{extra:?}");
        assert!(
            a.json()["message"].as_str().unwrap().starts_with(param),
            "{extra:?}: {}",
            a.text
        );
    }
    let a = c
        .post(
            "/discovery/set",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "no.such.app"),
                ("hostname", "host1"),
                ("status", "1"),
            ],
        )
        .await;
    assert_eq!(a.code(), -400);
    assert_eq!(c.latest("demo.app").await, stamp);
    let v = c.fetch("demo.app", 1).await.json();
    assert_eq!(
        v["data"]["instances"]["sh001"].as_array().unwrap().len(),
        2,
        "host1 still up"
    );
    node.stop().await;
}

#[tokio::test]
async fn reregister_replaces_data_and_keeps_registration_time() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    let first = c.fetch("demo.app", 1).await.json()["data"]["instances"]["sh001"][0].clone();
    let a = c
        .post(
            "/discovery/register",
            &[
                ("zone", "sh001"),
                ("env", "dev"),
                ("appid", "demo.app"),
                ("hostname", "host1"),
                ("status", "1"),
                ("addrs", "grpc://127.0.0.1:9999"),
            ],
        )
        .await;
    assert_eq!(a.code(), 0);
    let second = c.fetch("demo.app", 1).await.json()["data"]["instances"]["sh001"][0].clone();
    assert_eq!(second["addrs"], json!(["grpc://127.0.0.1:9999"]));
    assert_eq!(second["reg_timestamp"], first["reg_timestamp"]);
    assert_eq!(second["up_timestamp"], first["up_timestamp"]);
    assert!(second["latest_timestamp"].as_i64() > first["latest_timestamp"].as_i64());
    node.stop().await;
}

#[tokio::test]
async fn nodes_and_self_discovery_in_any_env() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let n = c.get("/discovery/nodes").await;
    let addr = &node.config.node.advertise;
    assert_eq!(
        n.text,
        format!(
            r#"{{"code":0,"message":"0","ttl":1,"data":[{{"addr":"{addr}","status":0,"zone":"sh001"}}]}}"#
        )
    );
    for env in ["dev", "prod", "uat"] {
        let v = c
            .get(&format!(
                "/discovery/fetch?env={env}&appid=infra.discovery&status=1"
            ))
            .await
            .json();
        let i = &v["data"]["instances"]["sh001"][0];
        assert_eq!(i["env"], env);
        assert_eq!(i["hostname"], "test1");
        assert_eq!(i["addrs"], json!([format!("http://{addr}")]));
        assert_eq!(i["status"], 1);
    }
    node.stop().await;
}

#[tokio::test]
async fn scheduler_from_configuration_is_in_fetch_data() {
    let node = TestNode::start_with(1000, |c| {
        c.schedules = toml::from_str::<toml::Table>(
            r#"
            [[scheduler]]
            appid = "demo.app"
            rules = [ { src = "sh001", dst = { sh001 = 3, sh002 = 1 } } ]
            "#,
        )
        .unwrap()["scheduler"]
            .clone()
            .try_into()
            .unwrap();
    })
    .await;
    let c = node.client();
    c.register("demo.app", "sh001", "host1", "1").await;
    c.register("other.app", "sh001", "o1", "1").await;
    let v = c.fetch("demo.app", 1).await.json();
    assert_eq!(
        v["data"]["scheduler"],
        json!([{"src":"sh001","dst":{"sh001":3,"sh002":1}}])
    );
    assert!(c.fetch("other.app", 1).await.json()["data"]
        .get("scheduler")
        .is_none());
    node.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_wrong_methods_answer_as_the_original() {
    let node = TestNode::start(1000).await;
    let c = node.client();
    let a = c.get("/discovery/nope").await;
    assert_eq!((a.status, a.text.as_str()), (404, "404 page not found"));
    let a = c.get("/discovery/register?zone=sh001").await;
    assert_eq!((a.status, a.text.as_str()), (405, "Method Not Allowed"));
    let a = c.post("/discovery/fetch", &[("appid", "demo.app")]).await;
    assert_eq!((a.status, a.text.as_str()), (405, "Method Not Allowed"));
    node.stop().await;
}
