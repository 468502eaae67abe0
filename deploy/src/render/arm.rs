//! ARM (Azure Resource Manager) for Azure: a storage account holding the manifest's queues, blob
//! containers and tables, a user-assigned managed identity for the proxies with data-plane role
//! assignments scoped to that account, and compute per affinity — a VM scale set running the
//! rendered systemd proxy units (`vms`), and for `k8s` the identity's ids as outputs, ready for
//! AKS workload identity.

use serde_json::{Value, json};

use crate::{
    arm_check::resource_id,
    manifest::{Affinity, Manifest, ProviderKind},
    render::{Files, boot_script},
};

const STORAGE_API: &str = "2023-01-01";
const IDENTITY_API: &str = "2023-01-31";
const ROLE_API: &str = "2022-04-01";
const COMPUTE_API: &str = "2023-09-01";
/// Built-in data-plane roles: Storage Queue / Blob / Table Data Contributor.
const QUEUE_ROLE: &str = "974c5e8b-45b9-4653-ba55-5f855dd0fb88";
const BLOB_ROLE: &str = "ba92f5b4-2d11-453d-a403-e96b0029c9fe";
const TABLE_ROLE: &str = "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3";

/// Azure Table names are alphanumeric: the name ekv's `azure-table` backend uses for
/// `<app>-<table>` (`t` + the name with `z` → `zz`, `-` → `zy`).
pub fn table_name(m: &Manifest, name: &str) -> String {
    ekv::services::azure_table::physical_name(&format!("{}-{name}", m.name))
}

/// Renders `arm/template.json`.
pub fn render(m: &Manifest) -> Files {
    let account = m
        .chain()
        .iter()
        .filter_map(|id| m.providers.get(id))
        .find(|p| p.kind == ProviderKind::Azure)
        .and_then(|p| p.account.clone())
        .unwrap_or_default();
    let storage = resource_id("Microsoft.Storage/storageAccounts", "[parameters('storageAccountName')]");
    let vms = m.compute.platform.affinity.contains(&Affinity::Vms);
    let identity =
        resource_id("Microsoft.ManagedIdentity/userAssignedIdentities", "[variables('identityName')]");
    let mut resources = vec![
        json!({
            "type": "Microsoft.Storage/storageAccounts",
            "apiVersion": STORAGE_API,
            "name": "[parameters('storageAccountName')]",
            "location": "[parameters('location')]",
            "kind": "StorageV2",
            "sku": { "name": "Standard_GZRS" },
            "metadata": checkov_skip(&[(
                "CKV_AZURE_59",
                "public network access stays enabled so the firewall decides (default deny, trusted services, the app's subnet); private endpoints are the operator's network design",
            )]),
            "properties": {
                "minimumTlsVersion": "TLS1_2",
                "networkAcls": {
                    "bypass": "AzureServices",
                    "defaultAction": "Deny",
                    "virtualNetworkRules": if vms { json!([{ "id": "[parameters('subnetId')]", "action": "Allow" }]) } else { json!([]) },
                },
                "supportsHttpsTrafficOnly": true,
                "allowBlobPublicAccess": false,
                "publicNetworkAccess": "Enabled",
                "encryption": { "keySource": "Microsoft.Storage", "services": { "blob": { "enabled": true }, "queue": { "enabled": true, "keyType": "Account" }, "table": { "enabled": true, "keyType": "Account" } } },
            },
        }),
        json!({
            "type": "Microsoft.ManagedIdentity/userAssignedIdentities",
            "apiVersion": IDENTITY_API,
            "name": "[variables('identityName')]",
            "location": "[parameters('location')]",
        }),
    ];
    let nested = |kind: &str, service: &str, name: String, extra: Value| {
        let mut r = json!({
            "type": format!("Microsoft.Storage/storageAccounts/{service}"),
            "apiVersion": STORAGE_API,
            "name": format!("[format('{{0}}/default/{name}', parameters('storageAccountName'))]"),
            "dependsOn": [storage.clone()],
        });
        if !extra.is_null() {
            r["properties"] = extra;
        }
        let _ = kind;
        r
    };
    for q in &m.queues {
        // The options as eqs's azure-queue keeps them (queue metadata), so the proxy finds the
        // queue exactly as if it had made it.
        let (max_receives, dead_letter) = match (&q.dead_letter, q.max_receives) {
            (Some(dlq), Some(n)) => (n, dlq.as_str()),
            _ => (0, "-"),
        };
        resources.push(nested(
            "queue",
            "queueServices/queues",
            format!("{}-{}", m.name, q.name),
            json!({ "metadata": {
                "exovisibility": q.visibility_timeout.unwrap_or(30).to_string(),
                "exoretention": "345600",
                "exodelay": "0",
                "exomaxreceives": max_receives.to_string(),
                "exodeadletter": dead_letter,
            } }),
        ));
    }
    for b in &m.buckets {
        resources.push(nested(
            "container",
            "blobServices/containers",
            format!("{}-{}", m.name, b.name),
            json!({ "publicAccess": "None" }),
        ));
    }
    for t in &m.tables {
        resources.push(nested("table", "tableServices/tables", table_name(m, &t.name), Value::Null));
    }
    if !m.topics.is_empty() {
        // eqs's azure-queue keeps topics in a table of the account (the proxy writes its rows).
        let prefix: String = format!("{}-", m.name).chars().filter(char::is_ascii_alphanumeric).collect();
        resources.push(nested(
            "table",
            "tableServices/tables",
            format!("exotopics{}", prefix.to_ascii_lowercase()),
            Value::Null,
        ));
    }
    let mut roles = Vec::new();
    if !m.queues.is_empty() {
        roles.push(("queues", QUEUE_ROLE));
    }
    if !m.buckets.is_empty() {
        roles.push(("blobs", BLOB_ROLE));
    }
    if !m.tables.is_empty() || !m.topics.is_empty() {
        roles.push(("tables", TABLE_ROLE));
    }
    for (what, role) in roles {
        resources.push(json!({
            "type": "Microsoft.Authorization/roleAssignments",
            "apiVersion": ROLE_API,
            "scope": "[format('Microsoft.Storage/storageAccounts/{0}', parameters('storageAccountName'))]",
            "name": format!("[guid(resourceGroup().id, parameters('storageAccountName'), variables('identityName'), '{what}')]"),
            "dependsOn": [storage.clone(), identity.clone()],
            "properties": {
                "roleDefinitionId": format!("[subscriptionResourceId('Microsoft.Authorization/roleDefinitions', '{role}')]"),
                "principalId": format!("[reference({}, '{IDENTITY_API}').principalId]", identity.trim_start_matches('[').trim_end_matches(']')),
                "principalType": "ServicePrincipal",
            },
        }));
    }
    let mut parameters = json!({
        "location": { "type": "string", "defaultValue": "[resourceGroup().location]", "metadata": { "description": "Region of every resource" } },
        "storageAccountName": { "type": "string", "defaultValue": account, "metadata": { "description": "Storage account for the app's queues, containers and tables" } },
    });
    let identity_ref = identity.trim_start_matches('[').trim_end_matches(']').to_owned();
    let mut outputs = json!({
        "proxyIdentityClientId": { "type": "string", "value": format!("[reference({identity_ref}, '{IDENTITY_API}').clientId]") },
        "proxyIdentityPrincipalId": { "type": "string", "value": format!("[reference({identity_ref}, '{IDENTITY_API}').principalId]") },
    });
    if vms {
        parameters["subnetId"] = json!({ "type": "string", "metadata": { "description": "Subnet resource id for the scale set" } });
        parameters["imageId"] = json!({ "type": "string", "metadata": { "description": "The app's VM image resource id (with the proxies in /usr/local/bin)" } });
        parameters["vmSize"] = json!({ "type": "string", "defaultValue": "Standard_B2s" });
        parameters["adminUsername"] = json!({ "type": "string", "defaultValue": "exoflow" });
        parameters["sshPublicKey"] = json!({ "type": "securestring", "metadata": { "description": "SSH public key for the admin user" } });
        let capacity = m.autoscale.as_ref().map_or(m.replicas, |a| a.min_replicas);
        resources.push(json!({
            "type": "Microsoft.Compute/virtualMachineScaleSets",
            "apiVersion": COMPUTE_API,
            "name": format!("{}-vmss", m.name),
            "location": "[parameters('location')]",
            "dependsOn": [identity.clone()],
            "metadata": checkov_skip(&[(
                "CKV_AZURE_95",
                "instances run the app's own versioned image; OS updates ship as a new image in the manifest, not as in-place upgrades",
            )]),
            "sku": { "name": "[parameters('vmSize')]", "capacity": capacity },
            "identity": { "type": "UserAssigned", "userAssignedIdentities": { identity.clone(): {} } },
            "properties": {
                "orchestrationMode": "Uniform",
                "upgradePolicy": { "mode": "Rolling" },
                "virtualMachineProfile": {
                    "storageProfile": { "imageReference": { "id": "[parameters('imageId')]" }, "osDisk": { "createOption": "FromImage", "managedDisk": { "storageAccountType": "Premium_LRS" } } },
                    "osProfile": {
                        "computerNamePrefix": m.name,
                        "adminUsername": "[parameters('adminUsername')]",
                        "customData": format!("[base64({})]", arm_string(&boot_script(m))),
                        "linuxConfiguration": {
                            "disablePasswordAuthentication": true,
                            "ssh": { "publicKeys": [{ "path": "[format('/home/{0}/.ssh/authorized_keys', parameters('adminUsername'))]", "keyData": "[parameters('sshPublicKey')]" }] },
                        },
                    },
                    "securityProfile": { "encryptionAtHost": true },
                    "networkProfile": {
                        "networkInterfaceConfigurations": [{
                            "name": "nic",
                            "properties": { "primary": true, "ipConfigurations": [{ "name": "ip", "properties": { "subnet": { "id": "[parameters('subnetId')]" } } }] },
                        }],
                    },
                },
            },
        }));
    }
    if !m.compute.platform.affinity.contains(&Affinity::K8s) {
        outputs.as_object_mut().map(|o| o.remove("proxyIdentityClientId"));
    }
    let template = json!({
        "$schema": "https://schema.management.azure.com/schemas/2019-04-01/deploymentTemplate.json#",
        "contentVersion": "1.0.0.0",
        "parameters": parameters,
        "variables": { "identityName": format!("{}-proxies", m.name) },
        "resources": resources,
        "outputs": outputs,
    });
    let mut files = Files::new();
    files.insert(
        "arm/template.json".into(),
        serde_json::to_string_pretty(&template).unwrap_or_default() + "\n",
    );
    files
}

fn checkov_skip(checks: &[(&str, &str)]) -> Value {
    json!({ "checkov": { "skip": checks.iter().map(|(id, why)| json!({ "id": id, "comment": why })).collect::<Vec<_>>() } })
}

/// A string literal inside an ARM expression: single quotes doubled.
fn arm_string(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
