//! A structural check of ARM templates. No offline ARM validator exists in the registries this
//! project can reach, so this checks what breaks deployments most often: the schema and content
//! version, the shape of parameters, variables, resources and outputs, that every `[...]`
//! expression's `parameters('x')` and `variables('y')` are declared, that every resource has a
//! type, a dated apiVersion and a name, and that every `dependsOn` names a resource of the
//! template.

use std::collections::BTreeSet;

use serde_json::Value;

const PARAMETER_TYPES: &[&str] =
    &["string", "securestring", "int", "bool", "object", "secureObject", "array"];

/// Problems found in a template (empty when it passes).
pub fn check(template: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let Some(root) = template.as_object() else { return vec!["the template is not a JSON object".into()] };
    match root.get("$schema").and_then(Value::as_str) {
        Some(schema) if schema.ends_with("/deploymentTemplate.json#") => {}
        other => problems.push(format!("$schema must be a deploymentTemplate.json# schema, got {other:?}")),
    }
    match root.get("contentVersion").and_then(Value::as_str) {
        Some(v)
            if v.split('.').count() == 4
                && v.split('.').all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())) => {}
        other => problems.push(format!("contentVersion must look like 1.0.0.0, got {other:?}")),
    }
    let parameters = section(root, "parameters", &mut problems);
    for (name, p) in &parameters {
        match p.get("type").and_then(Value::as_str) {
            Some(t) if PARAMETER_TYPES.iter().any(|k| k.eq_ignore_ascii_case(t)) => {}
            other => problems.push(format!("parameter '{name}' has no valid type ({other:?})")),
        }
    }
    let variables = section(root, "variables", &mut problems);
    let declared_parameters: BTreeSet<&str> = parameters.iter().map(|(k, _)| k.as_str()).collect();
    let declared_variables: BTreeSet<&str> = variables.iter().map(|(k, _)| k.as_str()).collect();

    let resources = match root.get("resources") {
        Some(Value::Array(list)) => list.clone(),
        _ => {
            problems.push("resources must be an array".into());
            Vec::new()
        }
    };
    let mut ids = BTreeSet::new();
    for (i, r) in resources.iter().enumerate() {
        let kind = r.get("type").and_then(Value::as_str).unwrap_or_default();
        let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
        if kind.split('/').count() < 2 || !kind.contains('.') {
            problems.push(format!("resources[{i}] has no namespace/type ({kind:?})"));
        }
        if name.is_empty() {
            problems.push(format!("resources[{i}] ({kind}) has no name"));
        }
        match r.get("apiVersion").and_then(Value::as_str) {
            Some(v) if dated(v) => {}
            other => problems.push(format!("resources[{i}] ({kind}) has no dated apiVersion ({other:?})")),
        }
        ids.insert(resource_id(kind, name));
    }
    for (i, r) in resources.iter().enumerate() {
        for dep in r.get("dependsOn").and_then(Value::as_array).into_iter().flatten() {
            let dep = dep.as_str().unwrap_or_default();
            if !ids.contains(dep) {
                problems.push(format!(
                    "resources[{i}] depends on {dep:?}, which is no resource of this template"
                ));
            }
        }
    }
    // Every expression anywhere must reference only declared parameters and variables.
    let mut strings = Vec::new();
    collect_strings(template, &mut strings);
    for s in strings.iter().filter(|s| s.starts_with('[') && s.ends_with(']') && !s.starts_with("[[")) {
        for (function, declared) in [("parameters", &declared_parameters), ("variables", &declared_variables)]
        {
            for name in references(s, function) {
                if !declared.contains(name.as_str()) {
                    problems.push(format!("expression {s:?} uses undeclared {function}('{name}')"));
                }
            }
        }
        if s.matches('(').count() != s.matches(')').count() {
            problems.push(format!("expression {s:?} has unbalanced parentheses"));
        }
    }
    problems
}

fn section(
    root: &serde_json::Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Vec<(String, Value)> {
    match root.get(key) {
        None => Vec::new(),
        Some(Value::Object(map)) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Some(_) => {
            problems.push(format!("{key} must be an object"));
            Vec::new()
        }
    }
}

fn dated(version: &str) -> bool {
    let date = version.strip_suffix("-preview").unwrap_or(version);
    let parts: Vec<&str> = date.split('-').collect();
    parts.len() == 3
        && [4, 2, 2].iter().zip(&parts).all(|(n, p)| p.len() == *n && p.bytes().all(|b| b.is_ascii_digit()))
}

/// The `dependsOn` form of a resource: `[resourceId('Type', 'name'...)]` where a nested name
/// `a/b/c` becomes separate segments, and a name expression's inner form is used as it is.
pub fn resource_id(kind: &str, name: &str) -> String {
    let segments: Vec<String> = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(expression) => vec![expression.to_owned()],
        None => name.split('/').map(|s| format!("'{s}'")).collect(),
    };
    format!("[resourceId('{kind}', {})]", segments.join(", "))
}

fn collect_strings<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::String(s) => out.push(s),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, out)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, out)),
        _ => {}
    }
}

fn references(expression: &str, function: &str) -> Vec<String> {
    let needle = format!("{function}('");
    let mut out = Vec::new();
    let mut rest = expression;
    while let Some(at) = rest.find(&needle) {
        let after = &rest[at + needle.len()..];
        if let Some(end) = after.find('\'') {
            out.push(after[..end].to_owned());
        }
        rest = after;
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn good() -> Value {
        json!({
            "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
            "contentVersion": "1.0.0.0",
            "parameters": { "account": { "type": "string" } },
            "variables": { "tag": "exoflow" },
            "resources": [
                { "type": "Microsoft.Storage/storageAccounts", "apiVersion": "2023-01-01", "name": "[parameters('account')]" },
                {
                    "type": "Microsoft.Storage/storageAccounts/queueServices/queues", "apiVersion": "2023-01-01",
                    "name": "[format('{0}/default/q', parameters('account'))]",
                    "dependsOn": ["[resourceId('Microsoft.Storage/storageAccounts', parameters('account'))]"],
                    "tags": { "app": "[variables('tag')]" },
                },
            ],
        })
    }

    #[test]
    fn a_good_template_passes() {
        assert_eq!(check(&good()), Vec::<String>::new());
    }

    #[test]
    fn broken_templates_are_caught() {
        type Break = Box<dyn Fn(&mut Value)>;
        let cases: Vec<(&str, Break)> = vec![
            ("$schema", Box::new(|t| t["$schema"] = json!("nope"))),
            ("contentVersion", Box::new(|t| t["contentVersion"] = json!("1.0"))),
            (
                "undeclared parameters('missing')",
                Box::new(|t| t["resources"][0]["name"] = json!("[parameters('missing')]")),
            ),
            (
                "undeclared variables('nope')",
                Box::new(|t| t["resources"][1]["tags"]["app"] = json!("[variables('nope')]")),
            ),
            ("dated apiVersion", Box::new(|t| t["resources"][0]["apiVersion"] = json!("latest"))),
            (
                "no resource of this template",
                Box::new(|t| {
                    t["resources"][1]["dependsOn"][0] = json!("[resourceId('Microsoft.Web/sites', 'x')]")
                }),
            ),
            ("has no name", Box::new(|t| t["resources"][0]["name"] = json!(""))),
            ("no valid type", Box::new(|t| t["parameters"]["account"]["type"] = json!("text"))),
            ("resources must be an array", Box::new(|t| t["resources"] = json!({}))),
            ("unbalanced parentheses", Box::new(|t| t["variables"]["tag"] = json!("[concat('a', 'b']"))),
        ];
        for (expected, breaks) in cases {
            let mut template = good();
            breaks(&mut template);
            let problems = check(&template);
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "expected a problem mentioning {expected:?}, got {problems:?}"
            );
        }
    }
}
