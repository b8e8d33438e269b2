//! The cgroup v2 device filter: OCI device rules compiled to a BPF_PROG_TYPE_CGROUP_DEVICE
//! program and attached to the container's cgroup (cgroup v2 has no devices.allow files).
//!
//! Rules are read in order; a rule for all devices with all access ("a *:* rwm") resets the
//! default and drops the rules before it. The program checks the remaining rules from the last
//! to the first, so the last matching rule decides, as with v1's lists.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

#[derive(Clone, Copy)]
#[repr(C)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

const LDX_W: u8 = 0x61; // r_dst = *(u32 *)(r_src + off)
const AND32_K: u8 = 0x54;
const RSH32_K: u8 = 0x74;
const MOV32_X: u8 = 0xbc;
const MOV64_K: u8 = 0xb7;
const JNE_K: u8 = 0x55;
const JNE_X: u8 = 0x5d;
const EXIT: u8 = 0x95;

/// Compiles `rules` (with the defaults every container gets already appended).
fn compile(rules: &[LinuxDeviceCgroup]) -> Vec<Insn> {
    let is_reset = |r: &LinuxDeviceCgroup| {
        matches!(r.typ(), None | Some(LinuxDeviceType::A))
            && r.major().is_none_or(|m| m < 0)
            && r.minor().is_none_or(|m| m < 0)
            && r.access()
                .as_deref()
                .is_none_or(|a| a.contains('r') && a.contains('w') && a.contains('m'))
    };
    let mut default_allow = true;
    let mut active: Vec<&LinuxDeviceCgroup> = vec![];
    for r in rules {
        if is_reset(r) {
            default_allow = r.allow();
            active.clear();
        } else {
            active.push(r);
        }
    }
    // r2 = device type, r3 = requested access, r4 = major, r5 = minor.
    let mut prog = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in active.iter().rev() {
        let mut block = vec![];
        let dev_type = match r.typ() {
            Some(LinuxDeviceType::B) => Some(1),
            Some(LinuxDeviceType::C) | Some(LinuxDeviceType::U) => Some(2),
            _ => None,
        };
        if let Some(t) = dev_type {
            block.push((JNE_K, 2, t));
        }
        let access = r.access().clone().unwrap_or_else(|| "rwm".into());
        let mask = (if access.contains('m') { 1 } else { 0 })
            | (if access.contains('r') { 2 } else { 0 })
            | (if access.contains('w') { 4 } else { 0 });
        if mask != 7 {
            // Allowed only if every requested bit is in the rule's access: (r3 & mask) == r3.
            block.push((0xff, 0, mask));
        }
        if let Some(m) = r.major().filter(|m| *m >= 0) {
            block.push((JNE_K, 4, m as i32));
        }
        if let Some(m) = r.minor().filter(|m| *m >= 0) {
            block.push((JNE_K, 5, m as i32));
        }
        // Each check jumps past the rest of the block (checks + "r0 = verdict; exit").
        let checks: usize = block
            .iter()
            .map(|(c, _, _)| if *c == 0xff { 3 } else { 1 })
            .sum();
        let mut emitted = 0usize;
        for (code, reg, imm) in block {
            if code == 0xff {
                emitted += 3;
                prog.push(insn(MOV32_X, 1, 3, 0, 0));
                prog.push(insn(AND32_K, 1, 0, 0, imm));
                prog.push(insn(JNE_X, 1, 3, (checks - emitted + 2) as i16, 0));
            } else {
                emitted += 1;
                prog.push(insn(code, reg, 0, (checks - emitted + 2) as i16, imm));
            }
        }
        prog.push(insn(MOV64_K, 0, 0, 0, r.allow() as i32));
        prog.push(insn(EXIT, 0, 0, 0, 0));
    }
    prog.push(insn(MOV64_K, 0, 0, 0, default_allow as i32));
    prog.push(insn(EXIT, 0, 0, 0, 0));
    prog
}

fn bpf(cmd: libc::c_long, attr: &[u8; 128]) -> io::Result<libc::c_long> {
    // SAFETY: bpf(2) with a zero-padded attr buffer of the kernel's expected size.
    let r = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.as_ptr(), attr.len()) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the filter for `rules` and attaches it to the cgroup v2 directory `cgroup`.
pub fn attach(cgroup: &Path, rules: &[LinuxDeviceCgroup]) -> io::Result<()> {
    const BPF_PROG_LOAD: libc::c_long = 5;
    const BPF_PROG_ATTACH: libc::c_long = 8;
    const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
    const BPF_CGROUP_DEVICE: u32 = 6;
    const BPF_F_ALLOW_MULTI: u32 = 2;
    let prog = compile(rules);
    let license = b"Apache-2.0\0";
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&BPF_PROG_TYPE_CGROUP_DEVICE.to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(prog.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[48..58].copy_from_slice(b"lodge_dev\0");
    let prog_fd = bpf(BPF_PROG_LOAD, &attr)?;
    // SAFETY: a new fd from the kernel.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(prog_fd as i32) };
    let dir = std::fs::File::open(cgroup)?;
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&(dir.as_raw_fd() as u32).to_ne_bytes());
    attr[4..8].copy_from_slice(&(prog_fd.as_raw_fd() as u32).to_ne_bytes());
    attr[8..12].copy_from_slice(&BPF_CGROUP_DEVICE.to_ne_bytes());
    attr[12..16].copy_from_slice(&BPF_F_ALLOW_MULTI.to_ne_bytes());
    bpf(BPF_PROG_ATTACH, &attr)?;
    Ok(())
}
