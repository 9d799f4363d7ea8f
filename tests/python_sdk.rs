//! The Python SDK from PyPI (`python-discovery-client`), unchanged, against
//! a started node. `.ci/run` installs it; set DISCOVERY_SKIP_PYTHON_SDK=1 to
//! skip where it cannot be installed.

mod common;

use std::time::Duration;

use common::TestNode;

#[tokio::test]
async fn the_python_sdk_registers_fetches_and_watches() {
    if std::env::var_os("DISCOVERY_SKIP_PYTHON_SDK").is_some() {
        eprintln!("skipped: DISCOVERY_SKIP_PYTHON_SDK is set");
        return;
    }
    let node = TestNode::start(1000).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python_sdk/sdk_client.py"
    );
    let domain = node.config.node.advertise.clone();
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&domain)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK script finished within 60 s")
        .expect("python3 runs (install it and `pip install python-discovery-client`)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("python sdk ok"),
        "python SDK run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    node.stop().await;
}
