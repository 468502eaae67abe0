//! systemd units for VMs: one sandboxed unit per proxy, its config, and an example of the
//! environment file that supplies credentials (the real one is written by the operator).

use crate::{
    manifest::{Manifest, ProviderKind},
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
{credentials}Restart=on-failure
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
            credentials = tls_credentials(m) + &remote_credentials(m),
        );
        // The remote providers' TLS files, as systemd hands them over.
        let mut config = s.config;
        for (name, file) in remote_files(m) {
            for key in ["ca-file", "client-cert-file", "client-key-file"] {
                config = config.replace(
                    &format!("{key}: {file}\n"),
                    &format!("{key}: {}\n", super::credential_path(m, s.name, name)),
                );
            }
        }
        files.insert(format!("systemd/exoflow-{}-{}.service", m.name, s.name), unit);
        files.insert(format!("systemd/etc/exoflow/{}/{}.yaml", m.name, s.name), config);
    }
    let mut example = String::from("# Copy to /etc/exoflow/<app>/credentials.env (mode 0600) and fill in.\n");
    let mut names = credential_env(m);
    if m.compute.standalone.is_some() {
        // Other hosts' proxies present it (their `remote` provider's `auth.token`).
        names.push(super::TOKEN_ENV.to_owned());
    }
    for name in names {
        example.push_str(&format!("{name}=\n"));
    }
    files.insert(format!("systemd/etc/exoflow/{}/credentials.env.example", m.name), example);
    files
}

/// With `compute.standalone.tls`: the certificate, key and client CA handed to the unit by
/// systemd (`LoadCredential=`, readable only by the unit's dynamic user, under
/// [`super::credential_path`]), so the files on the VM can stay root's. systemd copies them at
/// start: a rotated certificate is served after `systemctl restart`.
fn tls_credentials(m: &Manifest) -> String {
    let Some(tls) = m.compute.standalone.as_ref().and_then(|s| s.tls.as_ref()) else {
        return String::new();
    };
    let mut lines =
        format!("LoadCredential=tls-cert:{}\nLoadCredential=tls-key:{}\n", tls.cert_file, tls.key_file);
    if let Some(ca) = &tls.client_ca_file {
        lines.push_str(&format!("LoadCredential=tls-client-ca:{ca}\n"));
    }
    lines
}

/// The TLS files of the remote providers in the chain, with the credential name each is
/// handed over as.
fn remote_files(m: &Manifest) -> Vec<(&'static str, String)> {
    let chain = m.chain();
    let providers =
        chain.iter().filter_map(|id| m.providers.get(id)).filter(|p| p.kind == ProviderKind::Remote);
    let mut files = Vec::new();
    for p in providers {
        for (name, file) in [
            ("remote-ca", &p.ca_file),
            ("remote-cert", &p.client_cert_file),
            ("remote-key", &p.client_key_file),
        ] {
            if let Some(file) = file
                && !files.iter().any(|(n, _)| *n == name)
            {
                files.push((name, file.clone()));
            }
        }
    }
    files
}

/// `LoadCredential=` lines for [`remote_files`]: the client key can stay root's.
fn remote_credentials(m: &Manifest) -> String {
    remote_files(m).iter().map(|(name, file)| format!("LoadCredential={name}:{file}\n")).collect()
}

/// Proxies with local data in their own systemd StateDirectory.
fn sidecars_with_state(m: &Manifest) -> Vec<crate::render::Sidecar> {
    sidecars(m, super::ProxyHost::Vm, &|proxy| format!("/var/lib/exoflow/{}/{proxy}", m.name))
}
