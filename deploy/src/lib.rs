//! `exo deploy`: one ExoFlow app manifest → deployment files.
//!
//! - [`validate::check`] parses a manifest and reports every problem with line, column and hint;
//! - [`plan`] says which targets the manifest's affinity selects, and why;
//! - [`render`] produces the files of one target, deterministically;
//! - [`write`] writes them only when everything rendered (never a half-written directory).
//!
//! Targets: `k8s`, `compose`, `systemd`, `cloudformation`, `arm`.

pub mod arm_check;
pub mod crd_check;
pub mod locate;
pub mod manifest;
pub mod render;
pub mod validate;

use std::path::Path;

use manifest::{Affinity, Manifest};
pub use render::Files;

/// A deployment target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Kubernetes with proxy sidecars.
    K8s,
    /// compose for one host.
    Compose,
    /// systemd units for VMs.
    Systemd,
    /// CloudFormation (AWS resources and compute).
    CloudFormation,
    /// ARM (Azure resources and compute).
    Arm,
}

impl Target {
    /// Parses a target name.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "k8s" | "kubernetes" => Some(Self::K8s),
            "compose" => Some(Self::Compose),
            "systemd" => Some(Self::Systemd),
            "cloudformation" | "cfn" => Some(Self::CloudFormation),
            "arm" => Some(Self::Arm),
            _ => None,
        }
    }

    /// The target's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::K8s => "k8s",
            Self::Compose => "compose",
            Self::Systemd => "systemd",
            Self::CloudFormation => "cloudformation",
            Self::Arm => "arm",
        }
    }
}

/// Which targets the manifest's affinity selects, each with the reason.
pub fn plan(m: &Manifest) -> Vec<(Target, String)> {
    let mut out = Vec::new();
    for affinity in &m.compute.platform.affinity {
        let (target, why) = match affinity {
            Affinity::K8s => (Target::K8s, "affinity k8s: Deployment with a proxy sidecar per service used"),
            Affinity::Vms => (Target::Systemd, "affinity vms: systemd units for the proxies on the VM image"),
            Affinity::Edge => (Target::Compose, "affinity edge: compose for a single host"),
        };
        if !out.iter().any(|(t, _)| *t == target) {
            out.push((target, why.to_owned()));
        }
    }
    let uses_aws =
        m.chain().iter().filter_map(|id| m.providers.get(id)).any(|p| p.kind == manifest::ProviderKind::Aws);
    if uses_aws {
        out.push((
            Target::CloudFormation,
            "an aws provider in the chain: its queues, buckets, tables, role, and compute (ECS task for k8s, auto scaling group for vms)".to_owned(),
        ));
    }
    let uses_azure = m
        .chain()
        .iter()
        .filter_map(|id| m.providers.get(id))
        .any(|p| p.kind == manifest::ProviderKind::Azure);
    if uses_azure {
        out.push((
            Target::Arm,
            "an azure provider in the chain: its storage account, identity, role assignments and VM compute"
                .to_owned(),
        ));
    }
    out
}

/// Renders one target. Options: `native_sidecars` (k8s).
pub fn render(m: &Manifest, target: Target, native_sidecars: bool) -> Files {
    match target {
        Target::K8s => render::k8s::render(m, native_sidecars),
        Target::Compose => render::compose::render(m),
        Target::Systemd => render::systemd::render(m),
        Target::CloudFormation => render::cloudformation::render(m),
        Target::Arm => render::arm::render(m),
    }
}

/// Writes `files` under `out`: into a fresh sibling directory first, then moved into place, so a
/// failure leaves `out` as it was.
pub fn write(out: &Path, files: &Files) -> std::io::Result<()> {
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let staging =
        parent.join(format!(".{}.staging", out.file_name().and_then(|n| n.to_str()).unwrap_or("out")));
    if staging.exists() {
        std::fs::remove_dir_all(&staging)?;
    }
    for (path, content) in files {
        let file = staging.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(file, content)?;
    }
    if out.exists() {
        std::fs::remove_dir_all(out)?;
    }
    std::fs::rename(&staging, out)
}
