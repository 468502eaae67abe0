//! The backends each service has, read from the proxies' registries (never listed here): the
//! providers `conformance run --backend <provider>` knows, and the generated docs tables that a
//! test keeps in step with the registries.

use exo_proxy_core::registry::Entry;

use crate::Service;

/// Every service, in the order reports and tables show them.
pub const SERVICES: [Service; 3] = [Service::Queue, Service::Object, Service::Kv];

/// The registry of `service`'s proxy: every line, built into this binary or not.
pub fn entries(service: Service) -> &'static [Entry] {
    match service {
        Service::Queue => eqs::config::BackendConfig::ENTRIES,
        Service::Object => eos::config::BackendConfig::ENTRIES,
        Service::Kv => ekv::config::BackendConfig::ENTRIES,
    }
}

/// The backend kinds of `service` this build has.
pub fn kinds(service: Service) -> Vec<&'static str> {
    entries(service).iter().filter(|e| e.built).map(|e| e.kind).collect()
}

/// Every provider named in a registry, in first-seen order.
pub fn providers() -> Vec<&'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    for entry in SERVICES.iter().flat_map(|s| entries(*s)) {
        if !seen.contains(&entry.provider) {
            seen.push(entry.provider);
        }
    }
    seen
}

/// The backend `provider` offers for `service`, if any.
pub fn provider_kind(provider: &str, service: Service) -> Option<&'static str> {
    entries(service).iter().find(|e| e.provider == provider).map(|e| e.kind)
}

/// What `conformance` can run, for help and errors.
pub fn known_backends() -> String {
    let services: Vec<String> =
        SERVICES.iter().map(|s| format!("{}: {}", s.name(), kinds(*s).join(", "))).collect();
    format!("providers: {}; {}", providers().join(", "), services.join("; "))
}

/// The service name as the docs write it.
fn proxy_of(service: Service) -> &'static str {
    match service {
        Service::Queue => "eqs",
        Service::Object => "eos",
        Service::Kv => "ekv",
    }
}

/// The docs table of every backend (the README's generated section).
pub fn markdown_table() -> String {
    let mut out =
        String::from("| proxy | `kind:` | provider | cargo feature | what it is |\n|---|---|---|---|---|\n");
    for service in SERVICES {
        for e in entries(service) {
            out.push_str(&format!(
                "| {} | `{}` | {} | {} | {} |\n",
                proxy_of(service),
                e.kind,
                e.provider,
                e.feature.map(|f| format!("`{f}`")).unwrap_or_else(|| "always".into()),
                e.about
            ));
        }
    }
    out
}

/// The line that opens the generated section in a README.
pub const BEGIN: &str = "<!-- backends:begin (generated from the registries: `conformance list-backends --markdown`; a test compares) -->";
/// The line that closes it.
pub const END: &str = "<!-- backends:end -->";

/// The generated section of `readme`, if it has one.
pub fn generated_section(readme: &str) -> Option<&str> {
    let start = readme.find(BEGIN)? + BEGIN.len();
    let end = readme[start..].find(END)? + start;
    Some(readme[start..end].trim_matches('\n'))
}
