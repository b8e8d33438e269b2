//! systemd's manager over the system D-Bus: transient scopes (lodge-runc's containers under the
//! systemd cgroup driver, lodge-fs's keeper) and stopping units. zbus runs on a current-thread
//! tokio runtime that lives only for the call, so a caller that forks (lodge-runc) has no other
//! thread once it returns.

use std::path::Path;

pub use zbus::zvariant::Value;

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";

#[derive(Debug, thiserror::Error)]
pub enum SystemdError {
    #[error(
        "systemd's manager is reached over the system D-Bus, which is not reachable here ({0}); \
         start dbus"
    )]
    NoBus(String),
    #[error("systemd: {method} {unit}: {reason}")]
    Call {
        method: &'static str,
        unit: String,
        reason: String,
    },
    #[error("systemd: {0}")]
    Io(#[from] std::io::Error),
}

/// Whether systemd is the running init (sd_booted's test).
pub fn booted() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

/// A unit property, as StartTransientUnit takes them.
pub type Property<'a> = (&'a str, Value<'a>);

fn call<B>(method: &'static str, unit: &str, body: &B) -> Result<(), SystemdError>
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let conn = zbus::Connection::system()
            .await
            .map_err(|e| SystemdError::NoBus(e.to_string()))?;
        conn.call_method(Some(DESTINATION), PATH, Some(MANAGER), method, body)
            .await
            .map(drop)
            .map_err(|e| match e {
                zbus::Error::MethodError(name, _, _)
                    if name.as_str() == "org.freedesktop.systemd1.NoSuchUnit" =>
                {
                    SystemdError::Call {
                        method,
                        unit: unit.to_string(),
                        reason: "no such unit".into(),
                    }
                }
                e => SystemdError::Call {
                    method,
                    unit: unit.to_string(),
                    reason: e.to_string(),
                },
            })
    })
}

/// Starts transient scope `unit` holding `pids`, in `slice` (none: systemd's default), with
/// `properties` besides. systemd moves the pids into the scope's cgroup once the job runs,
/// which may be after this returns.
pub fn start_scope(
    unit: &str,
    slice: &str,
    description: &str,
    pids: &[u32],
    properties: Vec<Property>,
) -> Result<(), SystemdError> {
    let mut props: Vec<Property> = vec![
        ("Description", description.into()),
        ("PIDs", pids.to_vec().into()),
        // Gone once it ends, even killed: nothing left in `systemctl list-units`.
        ("CollectMode", "inactive-or-failed".into()),
    ];
    if !slice.is_empty() {
        props.push(("Slice", slice.into()));
    }
    props.extend(properties);
    let aux: Vec<(&str, Vec<Property>)> = vec![];
    call("StartTransientUnit", unit, &(unit, "replace", props, aux))
}

/// Changes `unit`'s properties for as long as it runs (`SetUnitProperties`, runtime only).
pub fn set_properties(unit: &str, properties: Vec<Property>) -> Result<(), SystemdError> {
    call("SetUnitProperties", unit, &(unit, true, properties))
}

/// Stops `unit` and forgets a failed result, so nothing is left listed. A unit already gone
/// is fine.
pub fn stop_unit(unit: &str) -> Result<(), SystemdError> {
    let stopped = call("StopUnit", unit, &(unit, "replace"));
    let _ = call("ResetFailedUnit", unit, &(unit,));
    match stopped {
        Err(SystemdError::Call { reason, .. }) if reason == "no such unit" => Ok(()),
        other => other,
    }
}

/// Tells systemd the service is ready (sd_notify READY=1), when it started us with a
/// NOTIFY_SOCKET (`Type=notify`); nothing otherwise.
pub fn notify_ready() -> std::io::Result<()> {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let sock = std::os::unix::net::UnixDatagram::unbound()?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(addr.as_os_str());
    if let Some(name) = bytes.strip_prefix(b"@") {
        use std::os::linux::net::SocketAddrExt;
        let a = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
        sock.send_to_addr(b"READY=1", &a)?;
    } else {
        sock.send_to(b"READY=1", &addr)?;
    }
    Ok(())
}

/// Whether `pid` sits in unit `unit` (its cgroup v2 path ends with it).
pub fn in_unit(pid: u32, unit: &str) -> std::io::Result<bool> {
    let suffix = format!("/{unit}");
    Ok(std::fs::read_to_string(format!("/proc/{pid}/cgroup"))?
        .lines()
        .any(|l| l.starts_with("0::") && l.trim_end().ends_with(&suffix)))
}
