//! The backend lists in the docs agree with the proxies' registries: the root README's generated
//! table, and each proxy README's "backend | durable" table.

use std::path::Path;

use exo_conformance::{
    Service,
    backends::{SERVICES, entries, generated_section, markdown_table},
};

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("conformance sits in the repository")
}

#[test]
fn root_readme_table_is_the_generated_one() {
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let section = generated_section(&readme).expect("README.md has the generated backends section");
    assert_eq!(
        section.trim(),
        markdown_table().trim(),
        "README.md's backends table is stale: replace it with `cargo run -p exo-conformance -- list-backends --markdown`"
    );
}

/// The kinds in the first column of the table headed `| backend | durable |`.
fn documented_kinds(readme: &str) -> Vec<String> {
    let mut lines = readme.lines().skip_while(|l| !l.starts_with("| backend | durable |")).skip(2);
    let mut kinds = Vec::new();
    for line in lines.by_ref() {
        let Some(row) = line.strip_prefix("| `") else { break };
        kinds.push(row.split('`').next().unwrap_or_default().to_owned());
    }
    kinds
}

#[test]
fn each_proxy_readme_documents_exactly_its_registry() {
    for service in SERVICES {
        let proxy = match service {
            Service::Queue => "eqs",
            Service::Object => "eos",
            Service::Kv => "ekv",
        };
        let path = repo().join("proxies").join(proxy).join("README.md");
        let mut documented = documented_kinds(&std::fs::read_to_string(&path).unwrap());
        let mut registered: Vec<String> = entries(service).iter().map(|e| e.kind.to_owned()).collect();
        documented.sort();
        registered.sort();
        assert_eq!(documented, registered, "{}: the backend table and the registry differ", path.display());
    }
}

#[test]
fn a_provider_offers_at_most_one_backend_per_service() {
    for service in SERVICES {
        let mut providers: Vec<&str> = entries(service).iter().map(|e| e.provider).collect();
        let all = providers.len();
        providers.sort();
        providers.dedup();
        assert_eq!(providers.len(), all, "{service:?} has two backends of one provider");
    }
}
