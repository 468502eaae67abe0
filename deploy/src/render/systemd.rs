//! systemd units for VMs: one sandboxed unit per proxy, its config, and an example of the
//! environment file that supplies credentials (the real one is written by the operator).

use crate::{
    manifest::Manifest,
    render::{Files, credential_env, sidecars},
};

/// Where the proxies' binaries are installed on the VM image.
pub const BIN_DIR: &str = "/usr/local/bin";

/// Renders `systemd/*.service`, `systemd/etc/exoflow/<app>/*.yaml` and the credentials example.
pub fn render(m: &Manifest) -> Files {
    let etc = format!("/etc/exoflow/{}", m.name);
    let mut files = Files::new();
    for s in sidecars_with_state(m) {
        let unit = format!(
            "[Unit]
Description=ExoFlow {name} proxy for {app}
After=network-online.target
Wants=network-online.target

[Service]
Type=exec
ExecStart={BIN_DIR}/{name}-proxy --config {etc}/{name}.yaml
EnvironmentFile=-{etc}/credentials.env
Restart=on-failure
RestartSec=2
# Room for many client connections (the proxy raises its soft limit to this and caps connections).
LimitNOFILE=65536
DynamicUser=yes
StateDirectory=exoflow/{app}/{name}
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
PrivateDevices=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
UMask=0077

[Install]
WantedBy=multi-user.target
",
            name = s.name,
            app = m.name,
        );
        files.insert(format!("systemd/exoflow-{}-{}.service", m.name, s.name), unit);
        files.insert(format!("systemd/etc/exoflow/{}/{}.yaml", m.name, s.name), s.config);
    }
    let mut example = String::from("# Copy to /etc/exoflow/<app>/credentials.env (mode 0600) and fill in.\n");
    for name in credential_env(m) {
        example.push_str(&format!("{name}=\n"));
    }
    files.insert(format!("systemd/etc/exoflow/{}/credentials.env.example", m.name), example);
    files
}

/// Proxies with local data in their own systemd StateDirectory.
fn sidecars_with_state(m: &Manifest) -> Vec<crate::render::Sidecar> {
    sidecars(m, super::ProxyHost::Loopback, &|proxy| format!("/var/lib/exoflow/{}/{proxy}", m.name))
}
