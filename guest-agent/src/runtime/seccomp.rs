//! Translates an OCI `linux.seccomp` section into seccomp BPF programs with seccompiler.
//!
//! seccompiler builds one filter per (match action, mismatch action) pair, while an OCI profile
//! mixes actions (allow, EPERM by default, ENOSYS for clone3, ...). So the profile becomes:
//! 1. a base filter: every syscall named by any rule (with its argument conditions) → ALLOW,
//!    anything else → the default action;
//! 2. one filter per other action A: the rules with action A → A, anything else → ALLOW.
//!
//! The kernel runs all installed filters and keeps the result of highest precedence
//! (KILL > TRAP > ERRNO > TRACE > LOG > ALLOW), and for equal actions the most recently
//! installed filter's: so installing the base first gives each rule's own action.

use std::collections::BTreeMap;

use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg, LinuxSeccompOperator};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::syscall_table::syscall_number;
use super::RuntimeError;

/// Compiled filters, to be installed in order.
#[derive(Clone, Debug, Default)]
pub struct CompiledSeccomp {
    pub programs: Vec<BpfProgram>,
    /// Syscall names of the profile this architecture does not have (skipped).
    pub unknown_names: Vec<String>,
}

impl CompiledSeccomp {
    /// Total BPF instructions over all programs.
    pub fn instruction_count(&self) -> usize {
        self.programs.iter().map(Vec::len).sum()
    }
}

type RuleMap = BTreeMap<i64, Vec<SeccompRule>>;

/// Compiles `profile` for x86_64.
pub fn compile(profile: &LinuxSeccomp) -> Result<CompiledSeccomp, RuntimeError> {
    let default = action(
        profile.default_action(),
        profile.default_errno_ret(),
        "linux.seccomp.defaultAction",
    )?;
    let mut all_rules = RuleMap::new();
    let mut by_action: Vec<(SeccompAction, RuleMap)> = Vec::new();
    let mut unknown_names = Vec::new();
    for (i, syscall) in profile.syscalls().iter().flatten().enumerate() {
        let field = format!("linux.seccomp.syscalls[{i}]");
        let act = action(
            syscall.action(),
            syscall.errno_ret(),
            &format!("{field}.action"),
        )?;
        let rule = rule_of(syscall.args().as_deref().unwrap_or(&[]), &field)?;
        for name in syscall.names() {
            let Some(nr) = syscall_number(name) else {
                unknown_names.push(name.clone());
                continue;
            };
            add_rule(&mut all_rules, nr, rule.clone());
            if act != SeccompAction::Allow {
                let slot = match by_action.iter().position(|(a, _)| *a == act) {
                    Some(slot) => slot,
                    None => {
                        by_action.push((act.clone(), RuleMap::new()));
                        by_action.len() - 1
                    }
                };
                if let Some((_, rules)) = by_action.get_mut(slot) {
                    add_rule(rules, nr, rule.clone());
                }
            }
        }
    }
    let mut programs = Vec::new();
    if default != SeccompAction::Allow {
        programs.push(program(all_rules, default, SeccompAction::Allow)?);
    }
    for (act, rules) in by_action {
        programs.push(program(rules, SeccompAction::Allow, act)?);
    }
    Ok(CompiledSeccomp {
        programs,
        unknown_names,
    })
}

/// Adds `rule` (None = unconditional) for syscall `nr`; an unconditional match absorbs the rest.
fn add_rule(map: &mut RuleMap, nr: i64, rule: Option<SeccompRule>) {
    match (map.get_mut(&nr), rule) {
        (None, None) => {
            map.insert(nr, Vec::new());
        }
        (None, Some(rule)) => {
            map.insert(nr, vec![rule]);
        }
        (Some(rules), None) => rules.clear(),
        (Some(rules), Some(rule)) => {
            if !rules.is_empty() {
                rules.push(rule);
            }
        }
    }
}

fn program(
    rules: RuleMap,
    mismatch: SeccompAction,
    matched: SeccompAction,
) -> Result<BpfProgram, RuntimeError> {
    let filter = SeccompFilter::new(rules, mismatch, matched, TargetArch::x86_64)
        .map_err(|e| RuntimeError::Seccomp(format!("building filter: {e}")))?;
    BpfProgram::try_from(filter)
        .map_err(|e| RuntimeError::Seccomp(format!("compiling filter: {e}")))
}

fn action(
    act: LinuxSeccompAction,
    errno: Option<u32>,
    field: &str,
) -> Result<SeccompAction, RuntimeError> {
    Ok(match act {
        LinuxSeccompAction::ScmpActAllow => SeccompAction::Allow,
        LinuxSeccompAction::ScmpActErrno => {
            SeccompAction::Errno(errno.unwrap_or(libc::EPERM as u32))
        }
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            SeccompAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => SeccompAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => SeccompAction::Trap,
        LinuxSeccompAction::ScmpActLog => SeccompAction::Log,
        LinuxSeccompAction::ScmpActTrace => SeccompAction::Trace(errno.unwrap_or(0)),
        other => {
            return Err(RuntimeError::spec(
                field,
                format!("seccomp action {other} is not supported"),
            ))
        }
    })
}

/// The argument conditions of one OCI rule (ANDed); `None` when it has none.
fn rule_of(args: &[LinuxSeccompArg], field: &str) -> Result<Option<SeccompRule>, RuntimeError> {
    if args.is_empty() {
        return Ok(None);
    }
    let mut conditions = Vec::with_capacity(args.len());
    for (j, arg) in args.iter().enumerate() {
        let field = format!("{field}.args[{j}]");
        let index = u8::try_from(arg.index())
            .ok()
            .filter(|i| *i < 6)
            .ok_or_else(|| {
                RuntimeError::spec(&field, format!("index {} is not 0..5", arg.index()))
            })?;
        let (op, value) = match arg.op() {
            LinuxSeccompOperator::ScmpCmpNe => (SeccompCmpOp::Ne, arg.value()),
            LinuxSeccompOperator::ScmpCmpLt => (SeccompCmpOp::Lt, arg.value()),
            LinuxSeccompOperator::ScmpCmpLe => (SeccompCmpOp::Le, arg.value()),
            LinuxSeccompOperator::ScmpCmpEq => (SeccompCmpOp::Eq, arg.value()),
            LinuxSeccompOperator::ScmpCmpGe => (SeccompCmpOp::Ge, arg.value()),
            LinuxSeccompOperator::ScmpCmpGt => (SeccompCmpOp::Gt, arg.value()),
            // OCI: (arg & value) == valueTwo.
            LinuxSeccompOperator::ScmpCmpMaskedEq => (
                SeccompCmpOp::MaskedEq(arg.value()),
                arg.value_two().unwrap_or(0),
            ),
        };
        let condition = SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value)
            .map_err(|e| RuntimeError::spec(&field, e.to_string()))?;
        conditions.push(condition);
    }
    SeccompRule::new(conditions)
        .map(Some)
        .map_err(|e| RuntimeError::spec(field, e.to_string()))
}

/// Installs the compiled filters on the calling thread (the last step before execve).
pub(crate) fn install(compiled: &CompiledSeccomp) -> Result<(), RuntimeError> {
    for program in &compiled.programs {
        seccompiler::apply_filter(program)
            .map_err(|e| RuntimeError::Seccomp(format!("installing filter: {e}")))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_profile_compiles_into_base_and_enosys_filters() {
        let profile = super::super::defaults::default_seccomp().unwrap();
        let compiled = compile(&profile).unwrap();
        assert_eq!(compiled.programs.len(), 2, "base + ENOSYS");
        eprintln!(
            "default profile: {} + {} BPF instructions",
            compiled.programs[0].len(),
            compiled.programs[1].len()
        );
        // The ENOSYS filter only names clone3: a handful of instructions.
        assert!(
            compiled.programs[1].len() < 20,
            "{}",
            compiled.programs[1].len()
        );
        assert!(
            compiled.programs[0].len() > 1000,
            "{}",
            compiled.programs[0].len()
        );
        // 32-bit-only names of the Docker list are not x86_64 syscalls.
        assert!(compiled.unknown_names.contains(&"chown32".to_string()));
        assert!(!compiled.unknown_names.contains(&"clone3".to_string()));
    }

    #[test]
    fn bad_rules_name_their_field() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "syscalls": [
                {"names": ["read"], "action": "SCMP_ACT_ALLOW"},
                {"names": ["write"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 7, "value": 1, "op": "SCMP_CMP_EQ"}]}
            ]
        }))
        .unwrap();
        let err = compile(&profile).unwrap_err().to_string();
        assert!(err.contains("linux.seccomp.syscalls[1].args[0]"), "{err}");
        assert!(err.contains('7'), "{err}");
    }

    #[test]
    fn unconditional_rule_absorbs_conditional_ones() {
        let mut map = RuleMap::new();
        let cond = SeccompCondition::new(0, SeccompCmpArgLen::Qword, SeccompCmpOp::Eq, 1).unwrap();
        let rule = SeccompRule::new(vec![cond]).unwrap();
        add_rule(&mut map, 1, Some(rule.clone()));
        assert_eq!(map[&1].len(), 1);
        add_rule(&mut map, 1, None);
        assert!(map[&1].is_empty());
        add_rule(&mut map, 1, Some(rule));
        assert!(map[&1].is_empty());
    }

    #[test]
    fn allow_by_default_needs_no_base_filter() {
        let profile: LinuxSeccomp = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["keyctl"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        }))
        .unwrap();
        assert_eq!(compile(&profile).unwrap().programs.len(), 1);
    }
}
