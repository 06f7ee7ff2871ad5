//! The fscrypt ioctls: with atrest-core's `fork.rs`, the only `unsafe`
//! code in the workspace.
//!
//! Each function here makes one ioctl with an argument struct from
//! `linux-raw-sys` (the kernel's `<linux/fscrypt.h>`), built in full before the
//! call, and returns plain values. Nothing else in the crate sees a raw struct,
//! a union or a pointer. Opcodes and layouts are checked against the kernel's
//! `_IOR`/`_IOWR` encoding in the tests below.

use std::mem::size_of;
use std::os::fd::AsFd;

use linux_raw_sys::general::{
    __IncompleteArrayField, FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER, fscrypt_add_key_arg,
    fscrypt_get_key_status_arg, fscrypt_get_policy_ex_arg, fscrypt_get_policy_ex_arg__bindgen_ty_1,
    fscrypt_key_specifier, fscrypt_key_specifier__bindgen_ty_1, fscrypt_policy_v2,
    fscrypt_remove_key_arg,
};
use linux_raw_sys::ioctl as opcodes;
use rustix::io::Errno;
use rustix::ioctl::{Opcode, Setter, Updater, ioctl};
use zeroize::Zeroize;

/// `_IOR('f', 19, struct fscrypt_policy_v1)`: the kernel reads the policy
/// (its direction bits say "read" for historical reasons), and takes the
/// version from the first byte, so a v2 struct goes through the same opcode.
const SET_POLICY: Opcode = opcodes::FS_IOC_SET_ENCRYPTION_POLICY as Opcode;
/// `_IOWR('f', 22, __u8[9])`.
const GET_POLICY_EX: Opcode = opcodes::FS_IOC_GET_ENCRYPTION_POLICY_EX as Opcode;
/// `_IOWR('f', 23, struct fscrypt_add_key_arg)`; the size excludes `raw[]`.
const ADD_KEY: Opcode = opcodes::FS_IOC_ADD_ENCRYPTION_KEY as Opcode;
/// `_IOWR('f', 24, struct fscrypt_remove_key_arg)`.
const REMOVE_KEY: Opcode = opcodes::FS_IOC_REMOVE_ENCRYPTION_KEY as Opcode;
/// `_IOWR('f', 25, struct fscrypt_remove_key_arg)`.
const REMOVE_KEY_ALL_USERS: Opcode = opcodes::FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS as Opcode;
/// `_IOWR('f', 26, struct fscrypt_get_key_status_arg)`.
const GET_KEY_STATUS: Opcode = opcodes::FS_IOC_GET_ENCRYPTION_KEY_STATUS as Opcode;

/// Length of a raw master key this crate adds (`FSCRYPT_MAX_KEY_SIZE`).
pub(crate) const RAW_KEY_LEN: usize = 64;

/// `struct fscrypt_add_key_arg` followed by its flexible `raw[]` array, sized
/// for one 64-byte key. `repr(C)` puts `raw` right after the header, where the
/// kernel reads `raw_size` bytes.
#[repr(C)]
struct AddKeyArgument {
    header: fscrypt_add_key_arg,
    raw: [u8; RAW_KEY_LEN],
}

impl Drop for AddKeyArgument {
    // The only copy of the key outside `SecretBytes` lives here; it is wiped
    // however the call ends (error or panic included).
    fn drop(&mut self) {
        self.raw.zeroize();
    }
}

/// What `FS_IOC_GET_ENCRYPTION_POLICY_EX` found.
pub(crate) enum RawPolicy {
    V2(fscrypt_policy_v2),
    /// A policy of another version (v1's version byte is 0).
    Other {
        version: u8,
    },
}

/// What `FS_IOC_GET_ENCRYPTION_KEY_STATUS` returned.
pub(crate) struct RawKeyStatus {
    pub(crate) status: u32,
    pub(crate) status_flags: u32,
    pub(crate) user_count: u32,
}

fn identifier_spec(identifier: [u8; 16]) -> fscrypt_key_specifier {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(&identifier);
    fscrypt_key_specifier {
        type_: FSCRYPT_KEY_SPEC_TYPE_IDENTIFIER,
        __reserved: 0,
        u: fscrypt_key_specifier__bindgen_ty_1 { __reserved: bytes },
    }
}

pub(crate) fn set_policy(fd: impl AsFd, policy: fscrypt_policy_v2) -> Result<(), Errno> {
    // SAFETY: the kernel reads a policy struct for SET_POLICY, and
    // `fscrypt_policy_v2` is the layout it expects when the version byte is 2.
    let request = unsafe { Setter::<SET_POLICY, fscrypt_policy_v2>::new(policy) };
    // SAFETY: `request` pairs the opcode with its argument type and owns the
    // argument for the whole call; the kernel only reads it.
    unsafe { ioctl(fd, request) }
}

pub(crate) fn get_policy(fd: impl AsFd) -> Result<RawPolicy, Errno> {
    let empty = fscrypt_policy_v2 {
        version: 0,
        contents_encryption_mode: 0,
        filenames_encryption_mode: 0,
        flags: 0,
        log2_data_unit_size: 0,
        __reserved: [0; 3],
        master_key_identifier: [0; 16],
    };
    let mut argument = fscrypt_get_policy_ex_arg {
        // In: room for the largest policy; out: the size of the one found.
        policy_size: size_of::<fscrypt_get_policy_ex_arg__bindgen_ty_1>() as u64,
        policy: fscrypt_get_policy_ex_arg__bindgen_ty_1 { v2: empty },
    };
    // SAFETY: GET_POLICY_EX takes a `struct fscrypt_get_policy_ex_arg`, which
    // is `argument`'s type.
    let request =
        unsafe { Updater::<GET_POLICY_EX, fscrypt_get_policy_ex_arg>::new(&mut argument) };
    // SAFETY: `request` borrows `argument` mutably for the call; the kernel
    // writes at most `policy_size` bytes into the union, which is that large.
    unsafe { ioctl(fd, request) }?;
    // SAFETY: every variant of the union is plain bytes starting with the
    // version byte, and all 24 bytes were initialized through `v2`.
    let version = unsafe { argument.policy.version };
    if u32::from(version) != linux_raw_sys::general::FSCRYPT_POLICY_V2
        || argument.policy_size != size_of::<fscrypt_policy_v2>() as u64
    {
        return Ok(RawPolicy::Other { version });
    }
    // SAFETY: as above, the union is fully initialized plain data, and the
    // kernel said it holds a v2 policy of exactly this size.
    let policy = unsafe { argument.policy.v2 };
    Ok(RawPolicy::V2(policy))
}

/// Adds a raw v2 master key and returns the identifier the kernel computed.
pub(crate) fn add_key(fd: impl AsFd, key: &[u8; RAW_KEY_LEN]) -> Result<[u8; 16], Errno> {
    // On the heap, so the key is never copied onto the stack by a move; the
    // box is built with a zero key and filled in place.
    let mut argument = Box::new(AddKeyArgument {
        header: fscrypt_add_key_arg {
            // The identifier is an output for this specifier type.
            key_spec: identifier_spec([0; 16]),
            raw_size: RAW_KEY_LEN as u32,
            key_id: 0,
            flags: 0,
            __reserved: [0; 7],
            raw: __IncompleteArrayField::new(),
        },
        raw: [0; RAW_KEY_LEN],
    });
    argument.raw.copy_from_slice(key);
    // SAFETY: ADD_KEY takes a `struct fscrypt_add_key_arg` followed by
    // `raw_size` key bytes; `AddKeyArgument` is exactly that (checked by
    // `add_key_argument_layout` below) and `raw_size` is `raw.len()`.
    let request = unsafe { Updater::<ADD_KEY, AddKeyArgument>::new(&mut argument) };
    // SAFETY: `request` borrows the whole argument, key bytes included, for
    // the call; the kernel writes only the identifier back.
    let result = unsafe { ioctl(fd, request) };
    argument.raw.zeroize();
    result?;
    // SAFETY: all variants of the union are byte arrays, fully initialized
    // through `__reserved`; any bit pattern is a valid identifier.
    let identifier = unsafe { argument.header.key_spec.u.identifier };
    Ok(identifier)
}

/// Removes this user's claim to a key (or every user's); returns
/// `removal_status_flags`.
pub(crate) fn remove_key(
    fd: impl AsFd,
    identifier: [u8; 16],
    all_users: bool,
) -> Result<u32, Errno> {
    let mut argument = fscrypt_remove_key_arg {
        key_spec: identifier_spec(identifier),
        removal_status_flags: 0,
        __reserved: [0; 5],
    };
    if all_users {
        // SAFETY: REMOVE_KEY_ALL_USERS takes a `struct fscrypt_remove_key_arg`.
        let request =
            unsafe { Updater::<REMOVE_KEY_ALL_USERS, fscrypt_remove_key_arg>::new(&mut argument) };
        // SAFETY: `request` borrows `argument` mutably for the call.
        unsafe { ioctl(fd, request) }?;
    } else {
        // SAFETY: REMOVE_KEY takes a `struct fscrypt_remove_key_arg`.
        let request = unsafe { Updater::<REMOVE_KEY, fscrypt_remove_key_arg>::new(&mut argument) };
        // SAFETY: `request` borrows `argument` mutably for the call.
        unsafe { ioctl(fd, request) }?;
    }
    Ok(argument.removal_status_flags)
}

pub(crate) fn key_status(fd: impl AsFd, identifier: [u8; 16]) -> Result<RawKeyStatus, Errno> {
    let mut argument = fscrypt_get_key_status_arg {
        key_spec: identifier_spec(identifier),
        __reserved: [0; 6],
        status: 0,
        status_flags: 0,
        user_count: 0,
        __out_reserved: [0; 13],
    };
    // SAFETY: GET_KEY_STATUS takes a `struct fscrypt_get_key_status_arg`.
    let request =
        unsafe { Updater::<GET_KEY_STATUS, fscrypt_get_key_status_arg>::new(&mut argument) };
    // SAFETY: `request` borrows `argument` mutably for the call.
    unsafe { ioctl(fd, request) }?;
    Ok(RawKeyStatus {
        status: argument.status,
        status_flags: argument.status_flags,
        user_count: argument.user_count,
    })
}

#[cfg(test)]
mod tests {
    use std::mem::offset_of;

    use linux_raw_sys::general::fscrypt_policy_v1;
    use rustix::ioctl::opcode;

    use super::*;

    /// The kernel's `_IOC(dir, type, nr, size)` for x86, arm, riscv and most
    /// others (asm-generic/ioctl.h), written out independently of rustix.
    const fn ioc(direction: u32, kind: u8, number: u8, size: usize) -> u32 {
        (direction << 30) | ((size as u32) << 16) | ((kind as u32) << 8) | number as u32
    }
    const IOC_READ: u32 = 2;
    const IOC_READ_WRITE: u32 = 3;

    #[test]
    fn opcodes_match_the_kernel_encoding() {
        // (opcode, value from our notes, _IOC direction, number, argument size,
        // the same through rustix's encoder)
        let cases: [(Opcode, u32, u32, u8, usize, Opcode); 6] = [
            (
                SET_POLICY,
                0x800C_6613,
                IOC_READ,
                19,
                size_of::<fscrypt_policy_v1>(),
                opcode::read::<fscrypt_policy_v1>(b'f', 19),
            ),
            (
                GET_POLICY_EX,
                0xC009_6616,
                IOC_READ_WRITE,
                22,
                9,
                opcode::read_write::<[u8; 9]>(b'f', 22),
            ),
            (
                ADD_KEY,
                0xC050_6617,
                IOC_READ_WRITE,
                23,
                size_of::<fscrypt_add_key_arg>(),
                opcode::read_write::<fscrypt_add_key_arg>(b'f', 23),
            ),
            (
                REMOVE_KEY,
                0xC040_6618,
                IOC_READ_WRITE,
                24,
                size_of::<fscrypt_remove_key_arg>(),
                opcode::read_write::<fscrypt_remove_key_arg>(b'f', 24),
            ),
            (
                REMOVE_KEY_ALL_USERS,
                0xC040_6619,
                IOC_READ_WRITE,
                25,
                size_of::<fscrypt_remove_key_arg>(),
                opcode::read_write::<fscrypt_remove_key_arg>(b'f', 25),
            ),
            (
                GET_KEY_STATUS,
                0xC080_661A,
                IOC_READ_WRITE,
                26,
                size_of::<fscrypt_get_key_status_arg>(),
                opcode::read_write::<fscrypt_get_key_status_arg>(b'f', 26),
            ),
        ];
        for (actual, noted, direction, number, size, through_rustix) in cases {
            let actual = u64::from(actual);
            assert_eq!(actual, u64::from(noted), "ioctl {number}");
            assert_eq!(
                actual,
                u64::from(ioc(direction, b'f', number, size)),
                "ioctl {number}"
            );
            assert_eq!(actual, u64::from(through_rustix), "ioctl {number}");
        }
    }

    #[test]
    fn struct_sizes_match_the_uapi_header() {
        assert_eq!(size_of::<fscrypt_policy_v1>(), 12);
        assert_eq!(size_of::<fscrypt_policy_v2>(), 24);
        assert_eq!(size_of::<fscrypt_key_specifier>(), 40);
        assert_eq!(size_of::<fscrypt_add_key_arg>(), 80);
        assert_eq!(size_of::<fscrypt_remove_key_arg>(), 64);
        assert_eq!(size_of::<fscrypt_get_key_status_arg>(), 128);
        assert_eq!(size_of::<fscrypt_get_policy_ex_arg>(), 32);
        assert_eq!(offset_of!(fscrypt_get_policy_ex_arg, policy), 8);
        assert_eq!(offset_of!(fscrypt_policy_v2, master_key_identifier), 8);
        assert_eq!(offset_of!(fscrypt_get_key_status_arg, status), 64);
    }

    #[test]
    fn add_key_argument_layout() {
        // `raw` must sit where the header's flexible array begins.
        assert_eq!(
            offset_of!(AddKeyArgument, raw),
            size_of::<fscrypt_add_key_arg>()
        );
        assert_eq!(
            offset_of!(fscrypt_add_key_arg, raw),
            size_of::<fscrypt_add_key_arg>()
        );
        assert_eq!(size_of::<AddKeyArgument>(), 80 + RAW_KEY_LEN);
        assert_eq!(
            RAW_KEY_LEN,
            linux_raw_sys::general::FSCRYPT_MAX_KEY_SIZE as usize
        );
    }
}
