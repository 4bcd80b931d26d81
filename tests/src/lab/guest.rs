//! The tiny guest: a 32-bit multiboot ELF whose only job is to increment a counter in
//! memory forever, so a test can prove a VM is running (and keeps running across a
//! migration) by reading that counter twice over QMP.
//!
//! Layout (one file, one PT_LOAD segment loaded at 1 MiB):
//! ELF header (52) | program header (32) | multiboot header (12) | code (11).
//! The multiboot header has no address fields, so QEMU's loader uses the ELF headers.

/// Physical address of the 32-bit counter the guest increments.
pub const COUNTER_ADDR: u32 = 0x0020_0000;
const LOAD_ADDR: u32 = 0x0010_0000;
const MB_MAGIC: u32 = 0x1BAD_B002;
const MB_FLAGS: u32 = 0;

/// The guest ELF image.
pub fn elf() -> Vec<u8> {
    let a = COUNTER_ADDR.to_le_bytes();
    // cli; loop: inc dword [COUNTER_ADDR]; jmp loop
    let code: Vec<u8> = [
        &[0xFA][..],
        &[0xFF, 0x05],
        &a,
        &[0xEB, 0xF8], // jmp -8: back to the inc (6 bytes) plus this jmp (2)
        &[0xF4],       // hlt, never reached
    ]
    .concat();
    let code_off: u32 = 52 + 32 + 12;
    let total = code_off + code.len() as u32;
    let entry = LOAD_ADDR + code_off;

    let mut f = Vec::with_capacity(total as usize);
    // ELF header
    f.extend_from_slice(&[0x7f, b'E', b'L', b'F', 1, 1, 1, 0]); // 32-bit, LE, v1, SysV
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    f.extend_from_slice(&3u16.to_le_bytes()); // EM_386
    f.extend_from_slice(&1u32.to_le_bytes()); // version
    f.extend_from_slice(&entry.to_le_bytes());
    f.extend_from_slice(&52u32.to_le_bytes()); // phoff
    f.extend_from_slice(&0u32.to_le_bytes()); // shoff
    f.extend_from_slice(&0u32.to_le_bytes()); // flags
    f.extend_from_slice(&52u16.to_le_bytes()); // ehsize
    f.extend_from_slice(&32u16.to_le_bytes()); // phentsize
    f.extend_from_slice(&1u16.to_le_bytes()); // phnum
    f.extend_from_slice(&40u16.to_le_bytes()); // shentsize
    f.extend_from_slice(&0u16.to_le_bytes()); // shnum
    f.extend_from_slice(&0u16.to_le_bytes()); // shstrndx
    // Program header: PT_LOAD of the whole file at LOAD_ADDR, RWX.
    for v in [1, 0, LOAD_ADDR, LOAD_ADDR, total, total, 7, 4] {
        f.extend_from_slice(&u32::to_le_bytes(v));
    }
    // Multiboot header (4-byte aligned at offset 84, within the first 8 KiB).
    f.extend_from_slice(&MB_MAGIC.to_le_bytes());
    f.extend_from_slice(&MB_FLAGS.to_le_bytes());
    f.extend_from_slice(&(0u32.wrapping_sub(MB_MAGIC.wrapping_add(MB_FLAGS))).to_le_bytes());
    f.extend_from_slice(&code);
    f
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiboot_header_checksums_and_entry_points_at_code() {
        let e = elf();
        let mb = &e[84..96];
        let sum = (0..3).fold(0u32, |s, i| {
            s.wrapping_add(u32::from_le_bytes(mb[i * 4..i * 4 + 4].try_into().unwrap()))
        });
        assert_eq!(sum, 0);
        let entry = u32::from_le_bytes(e[24..28].try_into().unwrap());
        assert_eq!(e[(entry - LOAD_ADDR) as usize], 0xFA);
    }
}
