//! nginx from the Debian package as a plain reverse proxy, with
//! bench/nginx.conf. Installed with apt-get when it is missing.

use super::Paths;
use crate::service::{Service, free_port, wait_for_port};
use anyhow::{Context as _, bail};
use std::process::Command;

pub struct Nginx {
    pub service: Service,
    pub base_url: String,
    pub version: String,
}

fn ensure_installed() -> anyhow::Result<()> {
    if Command::new("nginx").arg("-v").output().is_ok() {
        return Ok(());
    }
    eprintln!("bench: installing nginx (apt-get)");
    let apt = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("apt-get")?;
        if !status.success() {
            bail!("apt-get {args:?} failed");
        }
        Ok(())
    };
    apt(&["update", "-q"])?;
    apt(&["install", "-y", "-q", "nginx"])
}

fn version() -> String {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|out| String::from_utf8_lossy(&out.stderr).trim().to_owned())
        .unwrap_or_default()
}

pub async fn start(paths: &Paths, upstream_port: u16) -> anyhow::Result<Nginx> {
    ensure_installed()?;
    let dir = paths.run_dir.join("nginx");
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let template =
        std::fs::read_to_string(paths.repo.join("bench/nginx.conf")).context("bench/nginx.conf")?;
    let config = template
        .replace("@RUN_DIR@", &dir.display().to_string())
        .replace("@LISTEN@", &format!("127.0.0.1:{port}"))
        .replace("@UPSTREAM@", &format!("127.0.0.1:{upstream_port}"));
    let file = dir.join("nginx.conf");
    std::fs::write(&file, config)?;
    let mut command = Command::new("nginx");
    command
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&file)
        .arg("-e")
        .arg(dir.join("error.log"));
    let mut service = Service::spawn("nginx", command, &dir.join("nginx.out"))?;
    wait_for_port(&mut service, port).await?;
    Ok(Nginx {
        service,
        base_url: format!("http://127.0.0.1:{port}/v1"),
        version: version(),
    })
}
