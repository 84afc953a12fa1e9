//! The deployment files: the systemd unit passes `systemd-analyze verify` with the real
//! binary in its commands and stays hardened (`systemd-analyze security` exposure at most
//! 2.0, where systemd is installed), and the commands it and the container file run exist.

mod support;

use std::process::Command;

fn unit_with_binary() -> std::path::PathBuf {
    let text =
        std::fs::read_to_string(support::repo().join("deploy/ingest-gateway.service")).unwrap();
    let dir = std::env::temp_dir().join(support::unique("unit"));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ingest-gateway.service");
    std::fs::write(
        &path,
        text.replace("/usr/local/bin/ingest-gateway", support::bin()),
    )
    .unwrap();
    path
}

#[test]
fn the_systemd_unit_verifies_and_is_hardened() {
    let unit =
        std::fs::read_to_string(support::repo().join("deploy/ingest-gateway.service")).unwrap();
    for setting in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "StateDirectory=ingest-gateway",
        "NoNewPrivileges=yes",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.lines().any(|l| l == setting), "no {setting}");
    }
    let Ok(out) = Command::new("systemd-analyze").arg("--version").output() else {
        eprintln!("systemd-analyze is not installed; the unit's syntax is not checked");
        return;
    };
    assert!(out.status.success());
    let path = unit_with_binary();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !err.contains(path.to_str().unwrap()),
        "{err}"
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let exposure: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for ").nth(1))
        .and_then(|l| l.split(": ").nth(1))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{text}"));
    assert!(exposure <= 2.0, "exposure {exposure}:\n{text}");
}

#[test]
fn the_commands_the_deployment_files_run_exist() {
    let example = support::repo().join("gateway.toml");
    let checked = Command::new(support::bin())
        .args([std::ffi::OsStr::new("--config"), example.as_os_str()])
        .arg("check-config")
        .status();
    assert!(
        checked.is_ok_and(|s| s.success()),
        "check-config of the example failed"
    );
    let container = std::fs::read_to_string(support::repo().join("deploy/Containerfile")).unwrap();
    assert!(container.contains(r#"ENTRYPOINT ["/usr/local/bin/ingest-gateway", "--config", "/etc/ingest-gateway/gateway.toml"]"#));
    assert!(container.contains(r#"CMD ["serve"]"#));
    assert!(container.contains("cargo build --release --locked --bin ingest-gateway"));
}
