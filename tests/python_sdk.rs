//! The Python SDK from PyPI (`python-discovery-client`), unchanged, against
//! a started node. The test installs it (into cargo's scratch directory)
//! when Python cannot import it; set DISCOVERY_SKIP_PYTHON_SDK=1 to skip
//! where PyPI cannot be reached.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::TestNode;

/// A directory from which Python imports the SDK, installing it there
/// first if need be.
fn sdk_path() -> PathBuf {
    common::python_package("python-sdk", "discovery", "python-discovery-client")
}

#[tokio::test]
async fn the_python_sdk_registers_fetches_and_watches() {
    if std::env::var_os("DISCOVERY_SKIP_PYTHON_SDK").is_some() {
        eprintln!("skipped: DISCOVERY_SKIP_PYTHON_SDK is set");
        return;
    }
    let sdk = sdk_path();
    let node = TestNode::start(1000).await;
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python_sdk/sdk_client.py"
    );
    let domain = node.config.node.advertise.clone();
    let run = tokio::process::Command::new("python3")
        .arg(script)
        .arg(&domain)
        .env("PYTHONPATH", &sdk)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("the SDK script finished within 60 s")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("python sdk ok"),
        "python SDK run failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    node.stop().await;
}
