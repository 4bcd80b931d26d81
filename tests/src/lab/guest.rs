//! The tiny guest: a 32-bit multiboot ELF whose only job is to count timer ticks in
//! memory forever, so a test can prove a VM is running (and keeps running across a
//! migration) by reading that counter twice over QMP.
//!
//! It programs the PIT to 1 kHz, points every IDT vector at one handler (increment the
//! counter, EOI, iret) and `hlt`s in between: an idle guest, so a lab VM costs almost
//! no host CPU under TCG (a spinning guest costs a full core each, which a loaded
//! 2-core machine cannot afford).
//!
//! Layout (one file, one PT_LOAD segment loaded at 1 MiB):
//! ELF header (52) | program header (32) | multiboot header (12) | code (101).
//! The multiboot header has no address fields, so QEMU's loader uses the ELF headers.
/// Physical address of the 32-bit counter the guest increments.
pub const COUNTER_ADDR: u32 = 0x0020_0000;
const LOAD_ADDR: u32 = 0x0010_0000;
const MB_MAGIC: u32 = 0x1BAD_B002;
const MB_FLAGS: u32 = 0;

/// File offset of the code; the code below is assembled for `LOAD_ADDR + CODE_OFF`.
const CODE_OFF: u32 = 52 + 32 + 12;
/// Where the guest puts its IDT (256 gates).
pub const IDT_ADDR: u32 = 0x0020_1000;

/// `as --32` output of (addresses absolute, code at 0x100060):
/// ```text
/// start:  cli; mov $IDT,%edi; mov $handler,%eax; mov %cs,%dx; mov $256,%ecx
/// fill:   mov %ax,(%edi); mov %dx,2(%edi); mov $0x8E00,%ebx   # present, DPL0, 32-bit interrupt gate; mov %ebx,4(%edi)
///         shr $16,%eax; mov %ax,6(%edi); mov $handler,%eax; add $8,%edi; loop fill
///         lidt idtr
///         mov $0x34,%al; out %al,$0x43        # PIT ch0, rate generator
///         mov $0xA9,%al; out %al,$0x40        # divisor 1193 = 1 kHz
///         mov $0x04,%al; out %al,$0x40
///         in $0x21,%al; and $0xFE,%al; out %al,$0x21   # unmask IRQ0
///         sti
/// idle:   hlt; jmp idle
/// handler: push %eax; mov $0x20,%al; out %al,$0x20; out %al,$0xA0; pop %eax
///         incl COUNTER; iret
/// idtr:   .word 256*8-1; .long IDT
/// ```
const CODE: [u8; 101] = [
    0xfa, 0xbf, 0x00, 0x10, 0x20, 0x00, 0xb8, 0xb0, 0x00, 0x10, 0x00, 0x66, 0x8c, 0xca, 0xb9, 0x00,
    0x01, 0x00, 0x00, 0x66, 0x89, 0x07, 0x66, 0x89, 0x57, 0x02, 0xbb, 0x00, 0x8e, 0x00, 0x00, 0x89,
    0x5f, 0x04, 0xc1, 0xe8, 0x10, 0x66, 0x89, 0x47, 0x06, 0xb8, 0xb0, 0x00, 0x10, 0x00, 0x83, 0xc7,
    0x08, 0xe2, 0xe0, 0x0f, 0x01, 0x1d, 0xbf, 0x00, 0x10, 0x00, 0xb0, 0x34, 0xe6, 0x43, 0xb0, 0xa9,
    0xe6, 0x40, 0xb0, 0x04, 0xe6, 0x40, 0xe4, 0x21, 0x24, 0xfe, 0xe6, 0x21, 0xfb, 0xf4, 0xeb, 0xfd,
    0x50, 0xb0, 0x20, 0xe6, 0x20, 0xe6, 0xa0, 0x58, 0xff, 0x05, 0x00, 0x00, 0x20, 0x00, 0xcf, 0xff,
    0x07, 0x00, 0x10, 0x20, 0x00,
];

/// The guest ELF image.
pub fn elf() -> Vec<u8> {
    let code = CODE.to_vec();
    let total = CODE_OFF + code.len() as u32;
    let entry = LOAD_ADDR + CODE_OFF;

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
#[allow(clippy::unwrap_used)]
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
        // The code's absolute operands match where it is loaded and what we export.
        let handler = LOAD_ADDR + CODE_OFF + 0x50;
        assert_eq!(CODE[7..11], handler.to_le_bytes());
        assert_eq!(CODE[0x5a..0x5e], COUNTER_ADDR.to_le_bytes());
        assert_eq!(CODE[2..6], IDT_ADDR.to_le_bytes());
    }
}
