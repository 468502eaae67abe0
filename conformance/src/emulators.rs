//! Emulators the suite is run against, and the cases each is known unable to prove.
//!
//! A case listed here still runs, but its result is reported as *unverified against this
//! emulator* — never as a pass (the emulator cannot show the behaviour holds) and never as a
//! failure of the backend (the emulator, not the service, falls short). The reason names the
//! emulator's own code or documentation, so anyone can check it and drop the entry when the
//! emulator is fixed.

use crate::{CaseResult, Outcome};

/// An emulator standing in for a cloud service (`conformance run --emulator`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "kebab-case")]
pub enum Emulator {
    /// moto in server mode (AWS).
    Moto,
    /// Azurite (Azure Storage).
    Azurite,
    /// fake-gcs-server (Google Cloud Storage).
    FakeGcsServer,
}

/// A case an emulator cannot prove for some backends.
#[derive(Debug, Clone, Copy)]
pub struct Gap {
    /// The emulator.
    pub emulator: Emulator,
    /// Backends whose runs against it the gap affects (a failover chain with such a member too).
    pub backends: &'static [&'static str],
    /// The case.
    pub case: &'static str,
    /// Why, precisely enough to check.
    pub why: &'static str,
}

/// Every known gap.
pub const GAPS: &[Gap] = &[
    Gap {
        emulator: Emulator::Moto,
        backends: &["sqs", "failover"],
        case: "consumers.competing",
        why: "moto's ReceiveMessage is not atomic: its threaded server walks a queue's messages and marks \
              them received without a lock (moto/sqs/models.py, SQSBackend.receive_message), so two \
              concurrent receives can take one message; SQS itself hides a message from every other receive",
    },
    Gap {
        emulator: Emulator::Moto,
        backends: &["dynamodb", "failover"],
        case: "kv.cas_race",
        why: "moto's conditional writes are not atomic: its threaded server evaluates the condition and \
              stores the item without a lock (moto/dynamodb/models/table.py, Table.put_item), so two \
              concurrent compare-and-sets on one version can both succeed; DynamoDB evaluates a \
              condition and the write it guards atomically",
    },
    Gap {
        emulator: Emulator::Moto,
        backends: &["s3", "failover"],
        case: "object.cas_race",
        why: "moto's conditional PutObject is not atomic: it checks If-Match / If-None-Match against the \
              stored object, then reads the body and stores it, without a lock \
              (moto/s3/responses.py, S3Response.put_object), so two concurrent writes conditioned on one \
              ETag can both succeed; S3 checks the condition atomically with the write",
    },
    Gap {
        emulator: Emulator::FakeGcsServer,
        backends: &["gcs", "failover"],
        case: "object.delete_if_match",
        why: "fake-gcs-server deletes without reading ifGenerationMatch (fakestorage/object.go, \
              Server.deleteObject: get, then DeleteObject), so a delete with a stale generation \
              succeeds; GCS refuses it with 412",
    },
    Gap {
        emulator: Emulator::FakeGcsServer,
        backends: &["gcs", "failover"],
        case: "copy.create_only",
        why: "fake-gcs-server's rewrite reads no destination precondition (fakestorage/object.go, \
              Server.rewriteObject reads only sourceGeneration), so ifGenerationMatch=0 onto an \
              existing object overwrites it; GCS refuses it with 412",
    },
    Gap {
        emulator: Emulator::FakeGcsServer,
        backends: &["gcs", "failover"],
        case: "presign.tampered",
        why: "fake-gcs-server checks no V4 signature: a signed URL is served as a public path \
              (fakestorage/server.go routes /{bucket}/{object} on the public host with no \
              X-Goog-Signature check), so an altered URL still works; GCS answers 403",
    },
    Gap {
        emulator: Emulator::FakeGcsServer,
        backends: &["gcs", "failover"],
        case: "presign.expired",
        why: "fake-gcs-server checks no X-Goog-Date / X-Goog-Expires (signed URLs are served as \
              public paths, fakestorage/server.go), so an expired URL still works; GCS answers 400",
    },
];

/// The gap for this case, if the run is against `emulator` and the backend is one it affects.
pub fn gap(emulator: Emulator, backend: &str, case: &str) -> Option<&'static Gap> {
    GAPS.iter().find(|g| g.emulator == emulator && g.case == case && g.backends.contains(&backend))
}

/// Reports the cases `emulator` cannot prove as unverified, keeping what this run observed.
pub fn mark_unverified(emulator: Option<Emulator>, backend: &str, results: &mut [CaseResult]) {
    let Some(emulator) = emulator else { return };
    for result in results {
        let Some(gap) = gap(emulator, backend, &result.name) else { continue };
        let observed = match &result.outcome {
            Outcome::Pass => "passed".to_owned(),
            Outcome::Fail(why) => format!("failed: {why}"),
            Outcome::Unsupported(why) => format!("unsupported: {why}"),
            Outcome::Unverified(why) => why.clone(),
        };
        result.outcome = Outcome::Unverified(format!("{} (this run {observed})", gap.why));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: Outcome) -> CaseResult {
        CaseResult { name: "consumers.competing".into(), description: String::new(), outcome, millis: 1 }
    }

    #[test]
    fn a_known_gap_is_never_a_pass_nor_a_failure_and_only_where_it_applies() {
        let mut results = [result(Outcome::Pass), result(Outcome::Fail("held twice".into()))];
        mark_unverified(Some(Emulator::Moto), "sqs", &mut results);
        assert!(matches!(&results[0].outcome, Outcome::Unverified(why) if why.contains("this run passed")));
        assert!(
            matches!(&results[1].outcome, Outcome::Unverified(why) if why.contains("failed: held twice"))
        );
        for (emulator, backend) in
            [(None, "sqs"), (Some(Emulator::Moto), "azure-queue"), (Some(Emulator::Azurite), "sqs")]
        {
            let mut results = [result(Outcome::Fail("held twice".into()))];
            mark_unverified(emulator, backend, &mut results);
            assert!(matches!(results[0].outcome, Outcome::Fail(_)), "{emulator:?} {backend}");
        }
    }
}
