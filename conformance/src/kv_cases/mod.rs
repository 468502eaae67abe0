//! The key-value cases. Every case uses its own tables; waits are whole seconds where the
//! behaviour needs time (TTL).

use std::{collections::HashSet, time::Duration};

use exo_sdk::{Entry, Error, KvCapability as Cap, Precondition, Put, Reason};

use crate::{CaseOutcome, KvCase as Case, KvCtx as Ctx, check, expect_reason, ok};

mod batch;
mod conditions;
mod counters;
mod entries;
mod http;
mod limits;
mod list;
mod tables;
mod ttl;
mod write_batch;

/// Every case, area by area, in report order.
pub fn kv_cases() -> Vec<Case> {
    [
        tables::cases(),
        entries::cases(),
        conditions::cases(),
        counters::cases(),
        ttl::cases(),
        list::cases(),
        batch::cases(),
        write_batch::cases(),
        limits::cases(),
        http::cases(),
    ]
    .concat()
}

/// The call that needs `capability`, expected to fail with UNSUPPORTED where it is not declared.
pub async fn probe_unsupported(ctx: &Ctx, capability: Cap) -> Result<(), String> {
    let table = ctx.table("probe").await?;
    let c = &ctx.client;
    let result = match capability {
        Cap::CompareAndSet => c.put(&table, "k", "v", Put::create()).await.map(|_| ()),
        Cap::Ttl => c.put(&table, "k", "v", Put::default().ttl(Duration::from_secs(60))).await.map(|_| ()),
        Cap::List => c.list_page(&table, "", 0, "", false).await.map(|_| ()),
        Cap::Increment => c.increment(&table, "k", 1).await.map(|_| ()),
        Cap::AtomicBatch => {
            c.write_batch(&table, vec![exo_sdk::Write::put("k", "v", Put::default())]).await.map(|_| ())
        }
        Cap::Unspecified => return Err("no probe for UNSPECIFIED".into()),
    };
    match result {
        Err(err) if err.reason == Reason::Unsupported => Ok(()),
        Err(err) => Err(format!(
            "{} is not declared, so its call must fail with UNSUPPORTED; got {err}",
            capability.as_str_name()
        )),
        Ok(()) => Err(format!(
            "{} is not declared, yet its call succeeded: the declaration lies",
            capability.as_str_name()
        )),
    }
}

async fn value_of(ctx: &Ctx, table: &str, key: &str) -> Result<Entry, String> {
    ok(ctx.client.get(table, key).await, &format!("get {key:?}"))
}
