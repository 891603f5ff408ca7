//! The first step on Linux: one-thread check, `no_new_privs`, resource limits, Landlock.

use crate::{ConfineError, LandlockState, MAX_OPEN_FILES, Plan, SeccompState, Status};
use landlock::{
    ABI, Access, AccessFs, BitFlags, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr, RulesetCreatedAttr,
    RulesetStatus, Scope, path_beneath_rules,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The newest Landlock ABI the ruleset is written for (Linux 6.12: file-system rights including device ioctls,
/// signal and abstract-socket scoping). Older kernels enforce the part they know.
const TARGET_ABI: ABI = ABI::V6;

pub(crate) fn begin(plan: &Plan) -> Result<Status, ConfineError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(ConfineError::Threaded { threads });
    }
    let mut notes = Vec::new();
    rustix::thread::set_no_new_privs(true)
        .map_err(|e| ConfineError::Setup { what: "setting no_new_privs", source: e.into() })?;
    setrlimit(Resource::Core, Rlimit { current: Some(0), maximum: Some(0) })
        .map_err(|e| ConfineError::Setup { what: "turning core dumps off", source: e.into() })?;
    let max_open_files = limit_open_files()?;
    let (landlock, abi) = apply_landlock(plan)?;
    match landlock {
        LandlockState::Unsupported => notes.push(
            "this kernel has no Landlock (not built in or not enabled at boot): the file system is NOT confined"
                .to_owned(),
        ),
        LandlockState::Partial => notes.push(format!(
            "this kernel's Landlock (ABI {abi}) is older than the ruleset (ABI {}): newer rights are not enforced",
            TARGET_ABI as i32
        )),
        LandlockState::Enforced | LandlockState::Off => {}
    }
    Ok(Status {
        enabled: true,
        landlock,
        landlock_abi: abi,
        seccomp: SeccompState::Off,
        no_new_privs: true,
        max_open_files: Some(max_open_files),
        core_dumps_off: true,
        notes,
    })
}

/// Threads of this process, from `/proc/self/task` (1 when it cannot be read: `/proc` absent means no threads were
/// listed by anyone, and `begin` runs before any are started).
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").map_or(1, Iterator::count)
}

/// Lowers the open-files limit to [`MAX_OPEN_FILES`] (soft and hard) when it is higher; returns the limit in force.
fn limit_open_files() -> Result<u64, ConfineError> {
    let now = getrlimit(Resource::Nofile);
    let hard = now.maximum.map_or(MAX_OPEN_FILES, |m| m.min(MAX_OPEN_FILES));
    setrlimit(Resource::Nofile, Rlimit { current: Some(hard), maximum: Some(hard) })
        .map_err(|e| ConfineError::Setup { what: "limiting open files", source: e.into() })?;
    Ok(hard)
}

fn apply_landlock(plan: &Plan) -> Result<(LandlockState, u32), ConfineError> {
    let err = |e: landlock::RulesetError| ConfineError::Landlock(e.to_string());
    let read: BitFlags<AccessFs> = AccessFs::ReadFile | AccessFs::ReadDir;
    let write = AccessFs::from_all(TARGET_ABI) & !AccessFs::Execute;
    let exec = read | AccessFs::Execute;
    let make_dirs = AccessFs::ReadDir | AccessFs::MakeDir | AccessFs::RemoveDir;
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(TARGET_ABI))
        .map_err(err)?
        .scope(Scope::from_all(TARGET_ABI))
        .map_err(err)?
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.read, read))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.write, write))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.exec, exec))
        .map_err(err)?
        .add_rules(path_beneath_rules(&plan.make_dirs, make_dirs))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    let state = match status.ruleset {
        RulesetStatus::FullyEnforced => LandlockState::Enforced,
        RulesetStatus::PartiallyEnforced => LandlockState::Partial,
        RulesetStatus::NotEnforced => LandlockState::Unsupported,
    };
    Ok((state, abi_of(&status.landlock)))
}

/// The ABI a [`LandlockStatus`] reports: the kernel's own when it is newer than this crate knows.
fn abi_of(status: &LandlockStatus) -> u32 {
    match status {
        LandlockStatus::Available { effective_abi, kernel_abi } => {
            kernel_abi.and_then(|v| u32::try_from(v).ok()).unwrap_or(*effective_abi as u32)
        }
        _ => 0,
    }
}

/// The newest Landlock ABI, up to the one the ruleset is written for, whose rights the running kernel accepts (0:
/// none), found by creating (never applying) rulesets that require them.
pub(crate) fn kernel_abi() -> u32 {
    const ABIS: [ABI; 6] = [ABI::V6, ABI::V5, ABI::V4, ABI::V3, ABI::V2, ABI::V1];
    for abi in ABIS {
        let created = Ruleset::default()
            .set_compatibility(CompatLevel::HardRequirement)
            .handle_access(AccessFs::from_all(abi))
            .and_then(|r| if Scope::from_all(abi).is_empty() { Ok(r) } else { r.scope(Scope::from_all(abi)) })
            .and_then(|r| r.create());
        if created.is_ok() {
            return abi as u32;
        }
    }
    0
}
