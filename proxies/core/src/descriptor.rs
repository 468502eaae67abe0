//! What a backend is and can do, for every service: its name, its declared capabilities and
//! its limits. The API layers check calls against it before the backend sees them.

use std::{collections::HashSet, hash::Hash};

use exo_proto::{kv::v1::KvCapability, object::v1::ObjectCapability, queue::v1::QueueCapability};

use crate::{ExoError, ExoResult};

/// A service's capability enum (generated from the protos).
pub trait Capability: Copy + Eq + Hash + Into<i32> + Send + Sync + 'static {
    /// The proto name, e.g. `DEAD_LETTER`.
    fn name(&self) -> &'static str;
}

impl Capability for QueueCapability {
    fn name(&self) -> &'static str {
        self.as_str_name()
    }
}

impl Capability for ObjectCapability {
    fn name(&self) -> &'static str {
        self.as_str_name()
    }
}

impl Capability for KvCapability {
    fn name(&self) -> &'static str {
        self.as_str_name()
    }
}

/// The answer to a call a backend cannot take before it has described itself (a `remote`
/// whose remote has not been reached yet): BACKEND_UNAVAILABLE, retryable.
pub fn not_described() -> ExoError {
    ExoError::unavailable("the backend has not described itself yet (a remote proxy not reached so far)")
        .retryable()
}

/// A backend's fixed description.
#[derive(Debug, Clone)]
pub struct Descriptor<C, L> {
    /// The backend's name (`memory`, `embedded`, `fs`, …), used in metrics and errors.
    pub backend: &'static str,
    /// Declared capabilities; calls needing any other fail with UNSUPPORTED.
    pub capabilities: HashSet<C>,
    /// Limits checked before the backend is called.
    pub limits: L,
}

impl<C: Capability, L> Descriptor<C, L> {
    /// Whether `capability` is declared.
    pub fn supports(&self, capability: C) -> bool {
        self.capabilities.contains(&capability)
    }

    /// UNSUPPORTED unless `capability` is declared; `what` names the behaviour for the message.
    pub fn require(&self, capability: C, what: &str) -> ExoResult<()> {
        if self.supports(capability) {
            return Ok(());
        }
        Err(ExoError::unsupported(format!(
            "backend '{}' does not support {what} (capability {} not declared)",
            self.backend,
            capability.name()
        ))
        .with_backend(self.backend))
    }

    /// Every capability the contract defines (its wire values from 1 up): what a backend that
    /// does not know its own yet (a `remote` not reached) claims, to be narrowed later.
    pub fn every_capability() -> HashSet<C>
    where
        C: TryFrom<i32>,
    {
        (1..).map_while(|code| C::try_from(code).ok()).collect()
    }

    /// The declared capabilities as wire values, sorted.
    pub fn capability_codes(&self) -> Vec<i32> {
        let mut codes: Vec<i32> = self.capabilities.iter().map(|c| (*c).into()).collect();
        codes.sort_unstable();
        codes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_capability_is_every_one_the_protos_define() {
        type Queue = Descriptor<QueueCapability, ()>;
        type Object = Descriptor<ObjectCapability, ()>;
        type Kv = Descriptor<KvCapability, ()>;
        assert_eq!(Queue::every_capability().len(), QueueCapability::LargeMessages as usize);
        assert!(Queue::every_capability().contains(&QueueCapability::DeadLetter));
        assert_eq!(Object::every_capability().len(), ObjectCapability::IdempotentDelete as usize);
        assert_eq!(Kv::every_capability().len(), KvCapability::AtomicBatch as usize);
    }

    #[test]
    fn undeclared_capabilities_are_unsupported() {
        let d = Descriptor { backend: "t", capabilities: [QueueCapability::Purge].into(), limits: () };
        assert!(d.require(QueueCapability::Purge, "purge").is_ok());
        let err = d.require(QueueCapability::DeadLetter, "dead-lettering").unwrap_err();
        assert_eq!(err.reason, exo_proto::common::v1::ErrorReason::Unsupported);
        assert!(err.message.contains("DEAD_LETTER"), "{}", err.message);
        assert_eq!(d.capability_codes(), vec![QueueCapability::Purge as i32]);
    }
}
