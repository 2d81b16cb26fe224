//! What a Docker job may loosen, as this worker allows it: network modes,
//! lifted limits, capabilities added back and the OCI runtime. Pure.
//!
//! A job comes from the broker, where anyone who may publish can put one, so
//! the job's spec asks and the worker decides: a spec that asks for more than
//! the worker's configuration allows is refused before any container exists,
//! each of its tests an `Error` that names the setting to change.

use std::collections::BTreeSet;
pub use testfleet_types::messages::CACHE_NETWORK;

use testfleet_types::messages::RunSpec;

/// A limit a job may turn off, where the worker allows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Liftable {
    /// `run.memory_bytes` unset (or not positive): no memory limit.
    Memory,
    /// `run.pids_limit` unset (or not positive): no process limit.
    Pids,
    /// `run.no_new_privileges = false`: setuid binaries work.
    NoNewPrivileges,
}

impl Liftable {
    pub const NAMES: [&'static str; 3] = ["memory", "pids", "no_new_privileges"];

    pub fn parse(name: &str) -> Option<Liftable> {
        match name {
            "memory" => Some(Liftable::Memory),
            "pids" => Some(Liftable::Pids),
            "no_new_privileges" => Some(Liftable::NoNewPrivileges),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Liftable::Memory => "memory",
            Liftable::Pids => "pids",
            Liftable::NoNewPrivileges => "no_new_privileges",
        }
    }
}

/// What a job of `run.network = "cache"` is given on this worker
/// (`worker.cache`): the Docker network the caches are on, and the
/// variables that point package managers at them, before the spec's own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheAccess {
    pub network: String,
    pub env: Vec<(String, String)>,
}

/// A worker's rules for what its test containers may be given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Confinement {
    /// Network modes allowed as named, plus `container:*` for any
    /// `container:<name>` where listed.
    networks: Vec<String>,
    liftable: BTreeSet<Liftable>,
    /// Capability names, upper case without `CAP_`.
    capabilities: BTreeSet<String>,
    /// The highest limits a job may set: above them a limit is as good as none.
    ceilings: Ceilings,
    /// OCI runtimes a job may name (`run.runtime`); none: the engine's
    /// default only, since another runtime (runc beside gVisor) may confine
    /// less.
    runtimes: Vec<String>,
}

/// The highest memory and process limits a worker grants a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ceilings {
    pub memory_bytes: i64,
    pub pids: i64,
}

impl Confinement {
    pub fn new(
        networks: Vec<String>,
        liftable: BTreeSet<Liftable>,
        capabilities: impl IntoIterator<Item = String>,
        ceilings: Ceilings,
    ) -> Self {
        Confinement {
            networks,
            liftable,
            capabilities: capabilities.into_iter().map(|c| capability(&c)).collect(),
            ceilings,
            runtimes: Vec::new(),
        }
    }

    /// The same rules, allowing jobs to name these runtimes.
    pub fn with_runtimes(self, runtimes: Vec<String>) -> Self {
        Confinement { runtimes, ..self }
    }

    /// What the spec asks beyond this worker's rules, said with the worker
    /// setting that would allow it; `Ok` if nothing.
    pub fn check(&self, spec: &RunSpec) -> Result<(), String> {
        let mut refused = Vec::new();
        let network = &spec.container.network;
        if !self.allows_network(network) {
            refused.push(format!(
                "network mode {network:?} (allowed here: {}; worker.allowed_networks)",
                self.networks.join(", ")
            ));
        }
        for lifted in lifted_limits(spec) {
            if !self.liftable.contains(&lifted) {
                refused.push(format!(
                    "no {} limit (worker.liftable_limits would need {:?})",
                    lifted.as_str(),
                    lifted.as_str()
                ));
            }
        }
        refused.extend(self.over_ceilings(spec));
        if let Some(runtime) = &spec.runtime {
            if !self.runtimes.contains(runtime) {
                let allowed = match self.runtimes.is_empty() {
                    true => "the engine's default only".to_owned(),
                    false => self.runtimes.join(", "),
                };
                refused.push(format!(
                    "runtime {runtime:?} (allowed here: {allowed}; worker.allowed_runtimes)"
                ));
            }
        }
        let extra: Vec<String> = spec
            .container
            .cap_add
            .iter()
            .map(|c| capability(c))
            .filter(|c| !self.capabilities.contains(c))
            .collect();
        if !extra.is_empty() {
            refused.push(format!(
                "capabilities {} (worker.allowed_capabilities)",
                extra.join(", ")
            ));
        }
        match refused.is_empty() {
            true => Ok(()),
            false => Err(refused.join("; ")),
        }
    }

    /// Limits set above this worker's ceilings, unless the worker lets
    /// that limit go altogether.
    fn over_ceilings(&self, spec: &RunSpec) -> Vec<String> {
        let limits = &spec.container;
        let checks = [
            (
                Liftable::Memory,
                limits.memory_bytes,
                self.ceilings.memory_bytes,
                "worker.max_memory_bytes",
            ),
            (
                Liftable::Pids,
                limits.pids_limit,
                self.ceilings.pids,
                "worker.max_pids",
            ),
        ];
        checks
            .into_iter()
            .filter(|(limit, _, _, _)| !self.liftable.contains(limit))
            .filter_map(|(limit, asked, ceiling, key)| match asked {
                Some(asked) if asked > ceiling => Some(format!(
                    "a {} limit of {asked}, over this worker's {ceiling} ({key})",
                    limit.as_str()
                )),
                _ => None,
            })
            .collect()
    }

    fn allows_network(&self, network: &str) -> bool {
        self.networks.iter().any(|allowed| {
            allowed == network
                || (allowed == "container:*" && network.strip_prefix("container:").is_some())
        })
    }
}

/// The limits `spec` turns off. Docker reads a limit of 0 or less as none.
fn lifted_limits(spec: &RunSpec) -> Vec<Liftable> {
    let limits = &spec.container;
    let mut lifted = Vec::new();
    if limits.memory_bytes.is_none_or(|m| m <= 0) {
        lifted.push(Liftable::Memory);
    }
    if limits.pids_limit.is_none_or(|p| p <= 0) {
        lifted.push(Liftable::Pids);
    }
    if !limits.no_new_privileges {
        lifted.push(Liftable::NoNewPrivileges);
    }
    lifted
}

/// A capability's name as the engine takes it: `cap_net_admin` is `NET_ADMIN`.
pub fn capability(name: &str) -> String {
    let upper = name.trim().to_ascii_uppercase();
    match upper.strip_prefix("CAP_") {
        Some(rest) => rest.to_owned(),
        None => upper,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default_worker() -> Confinement {
        Confinement::new(
            vec!["none".into(), "bridge".into()],
            BTreeSet::new(),
            ["CHOWN".to_owned(), "setuid".to_owned()],
            CEILINGS,
        )
    }

    const CEILINGS: Ceilings = Ceilings {
        memory_bytes: 4 << 30,
        pids: 4096,
    };

    #[test]
    fn the_default_spec_passes_a_default_worker() {
        let spec = testfleet_common::config::default_spec();
        assert_eq!(default_worker().check(&spec), Ok(()));
    }

    #[test]
    fn a_hostile_spec_is_refused_with_every_reason() {
        let mut spec = testfleet_common::config::default_spec();
        spec.container.network = "host".into();
        spec.container.memory_bytes = None;
        spec.container.pids_limit = Some(-1);
        spec.container.no_new_privileges = false;
        spec.container.cap_add = vec!["cap_sys_admin".into(), "CHOWN".into()];
        let refusal = default_worker().check(&spec).unwrap_err();
        for expected in [
            "network mode \"host\"",
            "no memory limit",
            "no pids limit",
            "no no_new_privileges limit",
            "capabilities SYS_ADMIN ",
        ] {
            assert!(refusal.contains(expected), "{expected:?} in {refusal}");
        }
        assert!(!refusal.contains("CHOWN"), "{refusal}");
    }

    #[test]
    fn a_runtime_is_refused_unless_the_worker_lists_it() {
        let mut spec = testfleet_common::config::default_spec();
        spec.runtime = Some("runc".into());
        let refusal = default_worker().check(&spec).unwrap_err();
        assert!(
            refusal.contains("runtime \"runc\"") && refusal.contains("worker.allowed_runtimes"),
            "{refusal}"
        );
        let listed = default_worker().with_runtimes(vec!["crun".into(), "runc".into()]);
        assert_eq!(listed.check(&spec), Ok(()));
        spec.runtime = None;
        assert_eq!(
            default_worker().check(&spec),
            Ok(()),
            "the engine's default"
        );
    }

    #[test]
    fn a_limit_over_the_ceiling_is_as_good_as_none() {
        let mut spec = testfleet_common::config::default_spec();
        spec.container.memory_bytes = Some(i64::MAX);
        spec.container.pids_limit = Some(4096);
        let refusal = default_worker().check(&spec).unwrap_err();
        assert!(
            refusal.contains("a memory limit of 9223372036854775807")
                && refusal.contains("worker.max_memory_bytes")
                && !refusal.contains("pids"),
            "{refusal}"
        );
    }

    #[test]
    fn a_worker_may_allow_what_its_configuration_lists() {
        let worker = Confinement::new(
            vec!["container:*".into(), "host".into()],
            BTreeSet::from([Liftable::Memory, Liftable::Pids]),
            ["ALL".to_owned()],
            CEILINGS,
        );
        let mut spec = testfleet_common::config::default_spec();
        spec.container.network = "container:db".into();
        spec.container.memory_bytes = Some(0);
        spec.container.pids_limit = None;
        spec.container.cap_add = vec!["all".into()];
        assert_eq!(worker.check(&spec), Ok(()));
        spec.container.network = "bridge".into();
        assert!(worker.check(&spec).unwrap_err().contains("\"bridge\""));
    }
}
