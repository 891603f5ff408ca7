//! What one effective manifest grants beyond another, in words a reviewer reads.
//!
//! [`diff`] compares two [`EffectiveManifest`]s (defaults applied, mounts canonical), so a limit left unset on one
//! side is compared with its default, and a grant is new only when nothing on the other side already covers it: a
//! mount inside a mount with at least the same access, a host pattern another pattern covers
//! ([`HostPattern::covers`](crate::manifest::HostPattern::covers)), a tool grant another covers
//! ([`capability_covers`]).

use crate::capability_covers;
use std::path::Path;
use wasmagent_manifest::{Access, EffectiveManifest, Mount};

/// The differences between two manifests, each a sentence.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestDiff {
    /// What the second manifest grants beyond the first: more files, hosts, tools, environment, higher limits.
    pub widens: Vec<String>,
    /// What the second manifest takes away: fewer grants, lower limits.
    pub narrows: Vec<String>,
}

/// What `b` grants beyond `a` ([`ManifestDiff::widens`]) and what it no longer grants ([`ManifestDiff::narrows`]).
pub fn diff(a: &EffectiveManifest, b: &EffectiveManifest) -> ManifestDiff {
    let mut d = ManifestDiff::default();
    for mount in b.mounts() {
        if let Some(text) = mount_beyond(mount, a.mounts(), "adds") {
            d.widens.push(text);
        }
    }
    for mount in a.mounts() {
        if let Some(text) = mount_beyond(mount, b.mounts(), "removes") {
            d.narrows.push(text);
        }
    }
    for pattern in b.allowed_hosts() {
        if !a.allowed_hosts().iter().any(|p| p.covers(pattern)) {
            d.widens.push(format!("adds host {}", host_words(&pattern.to_string())));
        }
    }
    for pattern in a.allowed_hosts() {
        if !b.allowed_hosts().iter().any(|p| p.covers(pattern)) {
            d.narrows.push(format!("removes host {}", host_words(&pattern.to_string())));
        }
    }
    for grant in b.extra_capabilities() {
        if !a.extra_capabilities().iter().any(|g| capability_covers(g, grant)) {
            d.widens.push(format!("grants {grant}"));
        }
    }
    for grant in a.extra_capabilities() {
        if !b.extra_capabilities().iter().any(|g| capability_covers(g, grant)) {
            d.narrows.push(format!("no longer grants {grant}"));
        }
    }
    for (name, value) in b.env() {
        match a.env().get(name) {
            None => d.widens.push(format!("sets env {name}")),
            Some(old) if old != value => d.widens.push(format!("changes env {name}")),
            Some(_) => {}
        }
    }
    for name in a.env().keys().filter(|name| !b.env().contains_key(*name)) {
        d.narrows.push(format!("removes env {name}"));
    }
    let limits = [
        ("cpu_ms", a.cpu_ms(), b.cpu_ms()),
        ("memory_limit_bytes", a.memory_limit_bytes(), b.memory_limit_bytes()),
        ("max_output_bytes", a.max_output_bytes(), b.max_output_bytes()),
        ("max_host_calls", a.max_host_calls(), b.max_host_calls()),
        ("max_http_requests", a.max_http_requests(), b.max_http_requests()),
        ("max_http_request_bytes", a.max_http_request_bytes(), b.max_http_request_bytes()),
        ("max_http_response_bytes", a.max_http_response_bytes(), b.max_http_response_bytes()),
        ("http_timeout_ms", a.http_timeout_ms(), b.http_timeout_ms()),
        ("max_artifact_bytes", a.max_artifact_bytes(), b.max_artifact_bytes()),
    ];
    for (name, old, new) in limits {
        if new > old {
            d.widens.push(format!("raises {name} from {old} to {new}"));
        } else if new < old {
            d.narrows.push(format!("lowers {name} from {old} to {new}"));
        }
    }
    match (a.fuel(), b.fuel()) {
        (Some(old), None) => d.widens.push(format!("removes the fuel limit (was {old}; only cpu_ms bounds the run)")),
        (None, Some(new)) => d.narrows.push(format!("sets a fuel limit of {new}")),
        (Some(old), Some(new)) if new > old => d.widens.push(format!("raises fuel from {old} to {new}")),
        (Some(old), Some(new)) if new < old => d.narrows.push(format!("lowers fuel from {old} to {new}")),
        _ => {}
    }
    for key in b.trusted_keys().iter().filter(|k| !a.trusted_keys().contains(k)) {
        d.widens.push(format!("trusts module signatures by {key}"));
    }
    for key in a.trusted_keys().iter().filter(|k| !b.trusted_keys().contains(k)) {
        d.narrows.push(format!("no longer trusts module signatures by {key}"));
    }
    match (a.require_signature(), b.require_signature()) {
        (true, false) => d.widens.push("no longer requires modules to be signed".into()),
        (false, true) => d.narrows.push("requires modules to be signed by a trusted key".into()),
        _ => {}
    }
    d
}

/// `mount` in words when `others` does not cover it (`verb` is "adds" or "removes").
fn mount_beyond(mount: &Mount, others: &[Mount], verb: &str) -> Option<String> {
    let covering = |access: Access| {
        others.iter().any(|o| {
            let host_rest = mount.host.strip_prefix(&o.host).ok();
            let guest_rest = Path::new(&mount.guest).strip_prefix(&o.guest).ok();
            host_rest.is_some() && host_rest == guest_rest && (o.access == Access::ReadWrite || access == o.access)
        })
    };
    if covering(mount.access) {
        return None;
    }
    let place = if mount.host == Path::new(&mount.guest) {
        mount.host.display().to_string()
    } else {
        format!("{} (seen by the guest as {})", mount.host.display(), mount.guest)
    };
    Some(match mount.access {
        Access::ReadOnly => format!("{verb} read access to {place}"),
        Access::ReadWrite if covering(Access::ReadOnly) && verb == "adds" => {
            format!("adds write access to {place} (read-only before)")
        }
        Access::ReadWrite if covering(Access::ReadOnly) => format!("removes write access to {place} (read-only now)"),
        Access::ReadWrite => format!("{verb} read and write access to {place}"),
    })
}

fn host_words(pattern: &str) -> String {
    if pattern == "*" { "* (any public host)".into() } else { pattern.to_owned() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;
    use wasmagent_manifest::{CapabilityManifest, ManifestCeilings};

    fn manifest(toml: &str) -> EffectiveManifest {
        let ceilings = ManifestCeilings { allow_any_public_host: true, ..ManifestCeilings::default() };
        CapabilityManifest::from_toml_str(toml).unwrap().resolve(Path::new("/"), &ceilings).unwrap()
    }

    #[test]
    fn a_manifest_grants_nothing_beyond_itself() {
        let m = manifest("allowed_hosts = [\"api.example.com\"]\ncpu_ms = 100");
        assert_eq!(diff(&m, &m), ManifestDiff::default());
    }

    #[test]
    fn every_kind_of_widening_is_one_sentence() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        std::fs::create_dir_all(root.join("out")).unwrap();
        let r = root.display();
        let a = manifest(&format!(
            "allowed_read_paths = [\"{r}/out\"]\nallowed_hosts = [\"https://api.example.com\"]\n\
             extra_capabilities = [\"tool:github.search\"]\nfuel = 1000\nenv = {{ A = \"1\" }}"
        ));
        let b = manifest(&format!(
            "allowed_read_paths = [\"{r}/data\"]\nallowed_write_paths = [\"{r}/out\"]\n\
             allowed_hosts = [\"https://api.example.com:443\", \"http://127.0.0.1:8080\", \"*\"]\n\
             extra_capabilities = [\"tool:github.*\"]\ncpu_ms = 20000\nenv = {{ A = \"2\", B = \"x\" }}"
        ));
        let d = diff(&a, &b);
        assert_eq!(
            d.widens,
            [
                format!("adds read access to {r}/data"),
                format!("adds write access to {r}/out (read-only before)"),
                "adds host http://127.0.0.1:8080".into(),
                "adds host * (any public host)".into(),
                "grants tool:github.*".into(),
                "changes env A".into(),
                "sets env B".into(),
                "raises cpu_ms from 5000 to 20000".into(),
                "removes the fuel limit (was 1000; only cpu_ms bounds the run)".into(),
            ]
        );
        assert!(d.narrows.is_empty(), "{:?}", d.narrows);

        let back = diff(&b, &a);
        assert_eq!(back.widens, ["changes env A"]);
        assert_eq!(
            back.narrows,
            [
                format!("removes read access to {r}/data"),
                format!("removes write access to {r}/out (read-only now)"),
                "removes host http://127.0.0.1:8080".into(),
                "removes host * (any public host)".into(),
                "no longer grants tool:github.*".into(),
                "removes env B".into(),
                "lowers cpu_ms from 20000 to 5000".into(),
                "sets a fuel limit of 1000".into(),
            ]
        );
    }

    #[test]
    fn a_mount_inside_a_wider_one_adds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("data/sub")).unwrap();
        let r = root.display();
        let wide = manifest(&format!("allowed_write_paths = [\"{r}/data\"]"));
        let inner = manifest(&format!("allowed_read_paths = [\"{r}/data/sub\"]"));
        assert!(diff(&wide, &inner).widens.is_empty());
        assert_eq!(diff(&inner, &wide).widens, [format!("adds read and write access to {r}/data")]);
    }
}
