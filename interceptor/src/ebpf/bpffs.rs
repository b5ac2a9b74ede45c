//! The bpf filesystem the pins live on.

use std::{ffi::CString, io, os::unix::ffi::OsStrExt, path::Path};

use super::SteeringError;

const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
const DEFAULT_MOUNT: &str = "/sys/fs/bpf";

fn is_bpffs(path: &Path) -> io::Result<bool> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: statfs writes into the zeroed struct we own; the path is NUL-terminated.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(stat.f_type as i64 == BPF_FS_MAGIC)
}

/// Makes sure `pin_dir` exists on a bpf filesystem. Mounts bpffs at /sys/fs/bpf when the pin
/// directory is under it and nothing is mounted there yet (it is not mounted by default on
/// every system); anywhere else the operator must have mounted one.
pub fn prepare_pin_dir(pin_dir: &Path) -> Result<(), SteeringError> {
    let fs_error = |source: io::Error| SteeringError::PinDir {
        path: pin_dir.to_owned(),
        source,
    };
    if pin_dir.starts_with(DEFAULT_MOUNT)
        && !is_bpffs(Path::new(DEFAULT_MOUNT)).map_err(fs_error)?
    {
        let target = CString::new(DEFAULT_MOUNT).expect("constant has no NUL");
        let fstype = CString::new("bpf").expect("constant has no NUL");
        // SAFETY: plain mount(2) with NUL-terminated constants and no data.
        let rc = unsafe {
            libc::mount(
                fstype.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                0,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(fs_error(io::Error::last_os_error()));
        }
        tracing::info!("mounted a bpf filesystem at {DEFAULT_MOUNT}");
    }
    std::fs::create_dir_all(pin_dir).map_err(fs_error)?;
    if !is_bpffs(pin_dir).map_err(fs_error)? {
        return Err(fs_error(io::Error::other(
            "not on a bpf filesystem (mount one, or pin under /sys/fs/bpf)",
        )));
    }
    Ok(())
}
