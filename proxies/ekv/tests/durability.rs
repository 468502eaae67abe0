//! What the embedded backend acknowledged is there after it is closed and reopened, versions
//! and expiries included; nothing of a rejected conditional write is.

use ekv::ops;
use ekv::{
    backend::KeyValue,
    model::{Condition, TableName},
    services::embedded::EmbeddedKv,
};
use exo_proto::common::v1::ErrorReason;

#[tokio::test]
async fn acknowledged_writes_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ekv.db");
    let table = TableName::parse("table", "orders", "t").unwrap();
    let (v1, far) = {
        let kv = EmbeddedKv::open(&path).unwrap();
        assert!(kv.create_table(ops::CreateTable { table: &table }).await.unwrap());
        let v1 = kv
            .put(ops::Put {
                table: &table,
                key: "a",
                value: b"one".to_vec(),
                condition: &Condition::MustNotExist,
                expires_at_ms: 0,
            })
            .await
            .unwrap();
        let far = exo_proxy_core::now_ms() + 3_600_000;
        kv.put(ops::Put {
            table: &table,
            key: "b",
            value: b"two".to_vec(),
            condition: &Condition::None,
            expires_at_ms: far,
        })
        .await
        .unwrap();
        let err = kv
            .put(ops::Put {
                table: &table,
                key: "a",
                value: b"lost".to_vec(),
                condition: &Condition::MustNotExist,
                expires_at_ms: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(err.reason, ErrorReason::ConditionFailed);
        (v1, far)
    };
    // Dropping the store stops its writer thread; reopening reads what was committed.
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    let kv = EmbeddedKv::open(&path).unwrap();
    let a = kv.get(ops::Get { table: &table, key: "a" }).await.unwrap();
    assert_eq!((a.value.as_slice(), a.version.as_str()), (&b"one"[..], v1.as_str()));
    let b = kv.get(ops::Get { table: &table, key: "b" }).await.unwrap();
    assert_eq!((b.value.as_slice(), b.expires_at_ms), (&b"two"[..], far));
    assert!(!kv.create_table(ops::CreateTable { table: &table }).await.unwrap(), "table survived reopen");
}

#[tokio::test]
async fn a_value_a_native_client_wrote_as_text_reads_as_its_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ekv.db");
    let table = TableName::parse("table", "counts", "t").unwrap();
    {
        let kv = EmbeddedKv::open(&path).unwrap();
        kv.create_table(ops::CreateTable { table: &table }).await.unwrap();
        kv.increment(ops::Increment { table: &table, key: "hits", delta: 1, expires_at_ms: 0 })
            .await
            .unwrap();
    }
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    // As `sqlite3 ekv.db "UPDATE kv_entries SET value = '41'"` would.
    let native = exo_sqlite::rusqlite::Connection::open(&path).unwrap();
    assert_eq!(native.execute("UPDATE kv_entries SET value = '41', version = 'native'", []).unwrap(), 1);
    drop(native);
    let kv = EmbeddedKv::open(&path).unwrap();
    assert_eq!(kv.get(ops::Get { table: &table, key: "hits" }).await.unwrap().value, b"41");
    let counted = kv
        .increment(ops::Increment { table: &table, key: "hits", delta: 1, expires_at_ms: 0 })
        .await
        .unwrap();
    assert_eq!(counted.value, 42);
    let listed = kv
        .list(ops::List { table: &table, prefix: "", start_after: None, limit: 10, keys_only: false })
        .await
        .unwrap();
    assert_eq!(listed[0].value, b"42");
}
