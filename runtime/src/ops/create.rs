//! `create`: set up the container and leave its init blocked until `start`.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use crate::cgroups::{self, Cgroup, Layout};
use crate::error::{Error, Result};
use crate::hooks;
use crate::process::{self, InitArgs, Plan};
use crate::rootfs::RootfsIdmap;
use crate::spec;
use crate::state::{write_atomic, ContainerState, ShiftedTree, StateDir, Status, EXEC_SOCKET};
use crate::sys;
use crate::syscont::Mode;

use super::{hook_state, Globals};

#[derive(Debug, Default, Clone)]
pub struct CreateOptions {
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub no_pivot: bool,
    pub no_new_keyring: bool,
    pub preserve_fds: i32,
}

/// What a failed create must take back: each is recorded as soon as it is made.
#[derive(Default)]
struct Undo {
    cgroup: Option<Cgroup>,
    shifted: Option<ShiftedTree>,
    fs_registered: bool,
}

/// Creates container `id` and returns its init pid. On failure nothing is left behind:
/// no process, no cgroup, no state directory.
pub fn create(g: &Globals, id: &str, opts: &CreateOptions) -> Result<i32> {
    spec::validate_id(id).map_err(Error::InvalidId)?;
    let loaded = spec::load(&opts.bundle)?;
    let dir = StateDir::create(&g.root, id)?;
    let mut undo = Undo::default();
    let result = create_in(g, id, opts, &loaded, &dir, &mut undo);
    if result.is_err() {
        if let (true, Some(socket)) = (undo.fs_registered, &g.fs_socket) {
            let _ = crate::fs_client::unregister(socket, id);
        }
        if let Some(tree) = &undo.shifted {
            if let Err(e) = tree.shift(true) {
                tracing::warn!(error = %e, "shifting file owners back after a failed create");
            }
        }
        if let Some(cg) = &undo.cgroup {
            for pid in cg.pids() {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::SIGKILL,
                );
            }
            if let Err(e) = cg.remove() {
                tracing::warn!(error = %e, "cleaning up after a failed create");
            }
        }
        if let Err(e) = dir.destroy() {
            tracing::warn!(error = %e, "cleaning up after a failed create");
        }
        if let Some(socket) = &g.mgr_socket {
            // Registered before the failure (special volumes register early): forget it. Not
            // registered at all is the common case, and the manager's "unknown" answer is fine.
            let _ = crate::mgr_client::unregister(socket, id, true);
        }
    }
    result
}

fn cgroups_path(g: &Globals, id: &str, spec: &oci_spec::runtime::Spec) -> Result<String> {
    let given = spec
        .linux()
        .as_ref()
        .and_then(|l| l.cgroups_path().as_ref())
        .map(|p| p.display().to_string())
        .filter(|p| !p.is_empty());
    if g.systemd_cgroup {
        if !crate::systemd_scope::booted() {
            tracing::warn!("systemd cgroup driver: systemd is not running here, using cgroupfs with systemd's layout");
        }
        return match given {
            Some(p) => Ok(cgroups::systemd_to_fs_path(&p)?),
            None => Ok(format!("/system.slice/lodge-{id}.scope")),
        };
    }
    Ok(given.unwrap_or_else(|| format!("/lodge/{id}")))
}

fn create_in(
    g: &Globals,
    id: &str,
    opts: &CreateOptions,
    loaded: &spec::LoadedSpec,
    dir: &StateDir,
    undo: &mut Undo,
) -> Result<i32> {
    let mut spec = loaded.spec.clone();
    let mut env = spec
        .process()
        .as_ref()
        .and_then(|p| p.env().clone())
        .unwrap_or_default();
    let env_len = env.len();
    let knobs = crate::knobs::take(&mut env)?;
    let mode = Mode::decide(g.syscont_default, knobs.syscont);
    // Only a spec with knobs or a rewrite changes: a plain one keeps the config exactly as read.
    let rewritten = env.len() != env_len || mode != Mode::Plain;
    if rewritten {
        if let Some(p) = spec.process_mut() {
            p.set_env(Some(env));
        }
    }
    // Resolved once (the rewrite leaves cgroupsPath alone): lodge-fs needs the paths too.
    let layout = Layout::detect()?;
    let cg = Cgroup::resolve(&layout, &cgroups_path(g, id, &spec)?)?;
    let mut rootfs_idmap = RootfsIdmap::None;
    if mode != Mode::Plain || knobs.special_volumes {
        // Both need lodge-mgr before the clone: the range for the ID maps, the rootfs to preload
        // volumes from. Registered now (pid 0); updated once init exists.
        let range = id_range(g, id, loaded, &spec, knobs.special_volumes)?;
        match mode {
            Mode::System => crate::syscont::rewrite(&mut spec, range, knobs.honor_caps)?,
            Mode::Light => crate::syscont::rewrite_light(&mut spec, range)?,
            Mode::Plain => {}
        }
        if mode != Mode::Plain {
            rootfs_idmap =
                syscont_rootfs(&loaded.rootfs, &spec, knobs.chown_rootfs, &mut undo.shifted)?;
        }
        if knobs.special_volumes {
            add_special_volumes(g, id, &mut spec)?;
        }
    }
    if mode == Mode::System {
        if let Some(socket) = &g.fs_socket {
            // Set first: a failure after the request still unregisters.
            undo.fs_registered = true;
            let mut extra_traps = Vec::new();
            if knobs.ignore_sysfs_chown {
                extra_traps.extend(crate::syscont::CHOWN_SYSCALLS);
            }
            if knobs.allow_trusted_xattr {
                extra_traps.extend(crate::syscont::XATTR_SYSCALLS);
            }
            add_emulated_files(socket, id, &cg.paths, &extra_traps, &mut spec)?;
        }
    }
    let spec = &spec;
    // The config as the container runs it (knobs removed, volumes added): exec and delete read it.
    if rewritten {
        dir.save_config(&serde_json::to_vec(spec).expect("spec serializes"))?;
    } else {
        dir.save_config(&loaded.raw)?;
    }
    let plan = Plan::new(spec)?;
    let resources = spec.linux().as_ref().and_then(|l| l.resources().as_ref());
    // Under systemd the scope comes first: systemd makes its cgroup, lodge-runc then writes the
    // limits and the delegated layout into it (systemd_scope.rs). Dropped on failure: stopped.
    let scope = if g.systemd_cgroup && crate::systemd_scope::booted() {
        let given = spec
            .linux()
            .as_ref()
            .and_then(|l| l.cgroups_path().as_ref())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let (unit, slice) = crate::systemd_scope::unit_and_slice(&given, id);
        Some(crate::systemd_scope::Scope::start(
            &unit, &slice, id, resources,
        )?)
    } else {
        None
    };
    cg.create(resources)?;
    undo.cgroup = Some(cg.clone());
    // A system container's root gets a delegated cgroup; init enters it at clone.
    let delegation = match mode {
        Mode::System => Some(cg.delegate(root_owner(spec))?),
        _ => None,
    };
    let entry_cg = match &delegation {
        Some(d) => {
            let entry = cg.with_paths(d.entry.clone());
            // The v1 children show the container's limits too (the parent enforces them): tools
            // inside and engines reading the process's own cgroup see what they expect.
            if let Some(r) = resources {
                entry.apply(r)?;
            }
            entry
        }
        None => cg.clone(),
    };

    if rootfs_idmap == RootfsIdmap::None
        && plan.new_userns
        && crate::rootfs::idmap::rootfs_annotated(spec)
    {
        rootfs_idmap = RootfsIdmap::Bind;
    }
    // Init joins its v1 cgroups itself; the runtime places it in the others.
    let (self_join, placed_by_runtime) = entry_cg.split_self_join();
    let idmapped =
        crate::rootfs::idmap::prepare_all(spec, &loaded.bundle, &loaded.rootfs, plan.new_userns)?;
    let listener = listen(&dir.short_path(EXEC_SOCKET))?;
    let console = opts
        .console_socket
        .as_deref()
        .map(connect_console)
        .transpose()?;
    let hooks = spec.hooks().as_ref();
    #[allow(deprecated)]
    let runtime_hooks: Vec<_> = hooks
        .map(|h| {
            h.prestart()
                .clone()
                .unwrap_or_default()
                .into_iter()
                .chain(h.create_runtime().clone().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    let args = InitArgs {
        id,
        spec,
        rootfs: &loaded.rootfs,
        bundle: &loaded.bundle,
        plan: &plan,
        no_pivot: opts.no_pivot,
        no_new_keyring: opts.no_new_keyring,
        console_socket: console.as_ref().map(|c| c.as_raw_fd()),
        exec_listener: listener.as_raw_fd(),
        state_dir_fd: dir.raw_fd(),
        preserve_fds: opts.preserve_fds,
        cgroup_layout: &layout,
        cgroup_paths: &entry_cg.paths,
        cgroup_leaf: delegation.as_ref().and_then(|d| d.v2_leaf.as_deref()),
        cgroup_self_join: &self_join,
        hook_point: !runtime_hooks.is_empty(),
        idmapped: &idmapped,
        rootfs_idmap: &rootfs_idmap,
        staging: dir.path(),
        lock_mounts: mode == Mode::System && plan.new_userns,
    };
    let mut on_hook_point = |pid: i32| {
        let state = hook_state(id, Status::Creating, pid, &loaded.bundle, spec);
        hooks::run_all("createRuntime", &runtime_hooks, &state).map_err(|e| e.to_string())
    };
    let spawned = process::spawn(&args, &placed_by_runtime, &mut on_hook_point)?;
    drop(listener);
    drop(console);
    let pid = spawned.init_pid;
    // Init holds the scope now.
    let systemd_unit = scope.map(crate::systemd_scope::Scope::release);
    let start_time =
        sys::process_start_time(pid).ok_or(Error::Process(process::ProcessError::InitDied))?;
    // Registered with lodge-mgr once init exists (its pid is part of the record). A plain
    // container uses nothing of the manager's: as with runc, it runs while lodge-mgr is down.
    let needs_mgr = mode != Mode::Plain || knobs.special_volumes;
    let registered = match &g.mgr_socket {
        Some(socket) => {
            let pod = crate::mgr_client::pod_key(spec);
            match crate::mgr_client::register(socket, id, pid, &loaded.bundle, &loaded.rootfs, pod)
            {
                Ok(_) => true,
                Err(e @ crate::mgr_client::MgrError::Unreachable { .. }) if !needs_mgr => {
                    tracing::debug!(error = %e, "plain container not registered");
                    false
                }
                Err(e) => {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::SIGKILL,
                    );
                    return Err(e.into());
                }
            }
        }
        None => false,
    };
    let state = ContainerState {
        id: id.to_string(),
        init_pid: pid,
        init_start_time: start_time,
        bundle: loaded.bundle.clone(),
        rootfs: loaded.rootfs.clone(),
        created: crate::timefmt::now(),
        annotations: spec.annotations().clone().unwrap_or_default(),
        cgroup_paths: cg.paths.clone(),
        delegated_cgroup_paths: delegation.map(|d| d.entry).unwrap_or_default(),
        started: false,
        systemd_unit,
        mgr_registered: registered,
        special_volumes: knobs.special_volumes,
        rootfs_shift: undo.shifted.clone(),
        system: mode == Mode::System,
        system_capabilities: mode == Mode::System && !knobs.honor_caps,
        fs_registered: undo.fs_registered,
    };
    dir.save(&state)?;
    if let Some(pid_file) = &opts.pid_file {
        write_atomic(pid_file, pid.to_string().as_bytes(), 0o644)?;
    }
    Ok(pid)
}

/// `LODGE_SPECIAL_VOLUMES=TRUE`: lodge-mgr's host-backed volumes over /var/lib/docker,
/// containerd, kubelet, ... ID-mapped through the container's mappings when it has a user
/// namespace (the volumes keep the image's own, unshifted IDs on disk).
/// The host uid and gid of the container's root.
fn root_owner(spec: &oci_spec::runtime::Spec) -> (u32, u32) {
    let linux = spec.linux().as_ref();
    let host_of_root = |maps: Option<&Vec<oci_spec::runtime::LinuxIdMapping>>| {
        maps.into_iter()
            .flatten()
            .find(|m| m.container_id() == 0)
            .map(|m| m.host_id())
            .unwrap_or(0)
    };
    (
        host_of_root(linux.and_then(|l| l.uid_mappings().as_ref())),
        host_of_root(linux.and_then(|l| l.gid_mappings().as_ref())),
    )
}

/// How a system container's root sees its files as its own: an ID-mapped copy of the rootfs,
/// or an overlay rebuilt on ID-mapped lower layers with its upper layer shifted into the range
/// (both made after the clone through init's user namespace), or — when neither can be, or
/// `forced` — a chown of the whole rootfs. Whatever is shifted is recorded in `shifted` at once,
/// so a failure shifts it back.
fn syscont_rootfs(
    rootfs: &Path,
    spec: &oci_spec::runtime::Spec,
    forced: bool,
    shifted: &mut Option<ShiftedTree>,
) -> Result<RootfsIdmap> {
    use crate::rootfs::{idmap, overlay};
    let root = spec
        .linux()
        .as_ref()
        .and_then(|l| l.uid_mappings().as_ref())
        .and_then(|m| m.iter().find(|m| m.container_id() == 0).copied());
    let tree = |path: &Path| ShiftedTree {
        path: path.to_path_buf(),
        offset: root.map(|m| m.host_id()).unwrap_or(0),
        size: root.map(|m| m.size()).unwrap_or(0),
    };
    let mut shift = |path: &Path| -> Result<()> {
        *shifted = Some(tree(path));
        shifted
            .as_ref()
            .expect("just set")
            .shift(false)
            .map_err(Error::io(format!(
                "shifting owners under {}",
                path.display()
            )))
    };
    let reason = if forced {
        "LODGE_CHOWN_ROOTFS=TRUE"
    } else if let Some(layers) = overlay::detect(rootfs) {
        if overlay::supported(&layers) {
            if let Some(upper) = &layers.upper {
                shift(upper)?;
            }
            return Ok(RootfsIdmap::Overlay(layers));
        }
        "an overlay whose layers cannot be ID-mapped on this kernel"
    } else if idmap::fs_supports_idmap(rootfs) {
        return Ok(RootfsIdmap::Bind);
    } else {
        "its filesystem cannot be ID-mapped on this kernel"
    };
    tracing::warn!(rootfs = %rootfs.display(), reason, "the rootfs is not ID-mapped: chowning it into the container's range (reverted at delete)");
    shift(rootfs)?;
    Ok(RootfsIdmap::None)
}

/// The container's ID range: registered with lodge-mgr before the clone (its exclusive range),
/// or, without lodge-mgr, the spec's own mappings.
fn id_range(
    g: &Globals,
    id: &str,
    loaded: &spec::LoadedSpec,
    spec: &oci_spec::runtime::Spec,
    special_volumes: bool,
) -> Result<lodge_ipc::mgr::IdRange> {
    let Some(socket) = &g.mgr_socket else {
        let given = spec
            .linux()
            .as_ref()
            .and_then(|l| l.uid_mappings().as_ref())
            .and_then(|m| m.iter().find(|m| m.container_id() == 0));
        return match given {
            Some(m) if !special_volumes => Ok(lodge_ipc::mgr::IdRange {
                start: m.host_id(),
                size: m.size(),
            }),
            _ => Err(Error::Io {
                what: if special_volumes {
                    "LODGE_SPECIAL_VOLUMES".into()
                } else {
                    "a system container".into()
                },
                source: std::io::Error::other(
                    "needs lodge-mgr (its ID range, its volumes), not available with --no-mgr; \
                     give uidMappings/gidMappings, or run with --no-syscont",
                ),
            }),
        };
    };
    Ok(crate::mgr_client::register(
        socket,
        id,
        0,
        &loaded.bundle,
        &loaded.rootfs,
        crate::mgr_client::pod_key(spec),
    )?)
}

/// Registers the container with lodge-fs and bind-mounts its emulated /proc and /sys files
/// (after the spec's own mounts, so over its /proc and /sys). They are never ID-mapped: FUSE
/// shows them owned by the container's root already.
fn add_emulated_files(
    socket: &Path,
    id: &str,
    cgroup_paths: &[PathBuf],
    extra_traps: &[&str],
    spec: &mut oci_spec::runtime::Spec,
) -> Result<()> {
    let registration =
        crate::fs_client::register(socket, id, cgroup_paths.to_vec(), root_owner(spec))?;
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for e in registration.mounts {
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination(e.destination);
        m.set_typ(Some("bind".into()));
        m.set_source(Some(e.source));
        m.set_options(Some(vec!["bind".into()]));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    // /proc/sys is the container's own procfs, writable: the kernel applies namespaced knobs
    // (net.*, kernel.hostname, …) to the container's namespaces and refuses host-only ones to its
    // root, which does not own them; lodge-fs's files stand in for the host-wide knobs system
    // software sets (tests/tests/escape.rs checks a host knob still cannot be written).
    if let Some(linux) = spec.linux_mut() {
        if let Some(paths) = linux.readonly_paths_mut() {
            paths.retain(|p| p != "/proc/sys");
        }
    }
    if let Some(listener) = registration.listener {
        crate::syscont::trap_calls(spec, &listener, extra_traps)?;
    }
    Ok(())
}

fn add_special_volumes(g: &Globals, id: &str, spec: &mut oci_spec::runtime::Spec) -> Result<()> {
    let socket = g.mgr_socket.as_ref().expect("registered early");
    let volumes = crate::mgr_client::prepare_volumes(socket, id, 0, 0)?;
    let userns = spec
        .linux()
        .as_ref()
        .and_then(|l| l.uid_mappings().as_ref())
        .is_some_and(|m| !m.is_empty());
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for v in volumes {
        let mut options = vec!["rbind".to_string()];
        if userns {
            options.push("idmap".into());
        }
        let mut m = oci_spec::runtime::Mount::default();
        m.set_destination(v.destination);
        m.set_typ(Some("bind".into()));
        m.set_source(Some(v.source));
        m.set_options(Some(options));
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

fn listen(path: &Path) -> Result<OwnedFd> {
    use nix::sys::socket::{
        bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    let err = |e: nix::Error| Error::Io {
        what: format!("exec socket {}", path.display()),
        source: e.into(),
    };
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(err)?;
    let addr = UnixAddr::new(path).map_err(err)?;
    bind(fd.as_raw_fd(), &addr).map_err(err)?;
    listen(&fd, Backlog::new(1).expect("valid backlog")).map_err(err)?;
    Ok(fd)
}

fn connect_console(path: &Path) -> Result<OwnedFd> {
    let stream = std::os::unix::net::UnixStream::connect(path).map_err(Error::io(format!(
        "connecting to --console-socket {}",
        path.display()
    )))?;
    Ok(stream.into())
}
