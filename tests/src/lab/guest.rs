//! The tiny guest: a 32-bit multiboot ELF whose only job is to count timer ticks in
//! memory forever, so a test can prove a VM is running (and keeps running across a
//! migration) by reading that counter twice over QMP. And the same guest with a
//! prologue that first fills memory ([`filled_elf`]), for migrations that must last.
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

/// ELF offsets of the fields [`filled_elf`] patches: `e_entry`, and `p_filesz` and
/// `p_memsz` of the one program header (at 52).
const E_ENTRY: usize = 24;
const P_FILESZ: usize = 52 + 16;
const P_MEMSZ: usize = 52 + 20;

/// Where the filler starts: above the guest image (1 MiB), its counter and IDT (2 MiB).
pub const FILL_ADDR: u32 = 0x0030_0000;

/// The filler prologue, `as --32` output of the listing below; the `XX` operands are
/// zero here and patched by [`filled_elf`] at the offsets named after them.
/// ```text
///  0: fa               cli
///  1: bf XX XX XX XX   mov $FILL_ADDR,%edi      # FILL_EDI = 2
///  6: b9 XX XX XX XX   mov $dwords,%ecx         # FILL_ECX = 7
/// 11: b8 ef be ad de   mov $0xdeadbeef,%eax     # any non-zero word
/// 16: fc               cld
/// 17: f3 ab            rep stos %eax,%es:(%edi) # nothing when ecx = 0
/// 19: b8 XX XX XX XX   mov $entry,%eax          # FILL_ENTRY = 20: the guest's own
/// 24: ff e0            jmp *%eax
/// ```
const FILL: [u8; 26] = [
    0xfa, 0xbf, 0, 0, 0, 0, 0xb9, 0, 0, 0, 0, 0xb8, 0xef, 0xbe, 0xad, 0xde, 0xfc, 0xf3, 0xab, 0xb8,
    0, 0, 0, 0, 0xff, 0xe0,
];
const FILL_EDI: usize = 2;
const FILL_ECX: usize = 7;
const FILL_ENTRY: usize = 20;

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

/// The guest with the [`FILL`] prologue: it first fills `fill_mib` MiB from
/// [`FILL_ADDR`] with a non-zero word, then jumps to the guest's own entry. QEMU sends
/// zero pages as a flag, so only a filled guest makes a migration move real bytes and
/// last long enough under a bandwidth cap to be interrupted. The VM needs at least
/// `3 + fill_mib` MiB of memory.
pub fn filled_elf(fill_mib: u32) -> Vec<u8> {
    let mut f = elf();
    let word = |f: &[u8], at: usize| u32::from_le_bytes([f[at], f[at + 1], f[at + 2], f[at + 3]]);
    let mut code = FILL;
    code[FILL_EDI..FILL_EDI + 4].copy_from_slice(&FILL_ADDR.to_le_bytes());
    code[FILL_ECX..FILL_ECX + 4].copy_from_slice(&(fill_mib * (1 << 20) / 4).to_le_bytes());
    code[FILL_ENTRY..FILL_ENTRY + 4].copy_from_slice(&word(&f, E_ENTRY).to_le_bytes());
    // The prologue goes after the image, inside the one PT_LOAD segment, which grows.
    let new_entry = LOAD_ADDR + f.len() as u32;
    f.extend_from_slice(&code);
    let total = (f.len() as u32).to_le_bytes();
    f[E_ENTRY..E_ENTRY + 4].copy_from_slice(&new_entry.to_le_bytes());
    f[P_FILESZ..P_FILESZ + 4].copy_from_slice(&total);
    f[P_MEMSZ..P_MEMSZ + 4].copy_from_slice(&total);
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

    #[test]
    fn filled_guest_enters_the_fill_then_jumps_to_the_lab_guest() {
        let base = elf();
        let e = filled_elf(5);
        assert_eq!(&e[84..96], &base[84..96], "multiboot header unchanged");
        let word = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
        let entry = word(&e, E_ENTRY);
        assert_eq!(entry, LOAD_ADDR + base.len() as u32);
        assert_eq!(
            (word(&e, P_FILESZ), word(&e, P_MEMSZ)),
            (e.len() as u32, e.len() as u32)
        );
        let code = &e[(entry - LOAD_ADDR) as usize..];
        assert_eq!(code.len(), FILL.len());
        assert_eq!(word(code, 2), FILL_ADDR, "where to fill");
        assert_eq!(word(code, 7), 5 << 18, "dwords to fill");
        assert_eq!(&code[code.len() - 2..], [0xFF, 0xE0]);
        assert_eq!(word(code, code.len() - 6), word(&base, E_ENTRY));
    }
}
