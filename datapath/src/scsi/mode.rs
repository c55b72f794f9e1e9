//! MODE SENSE(6/10) and MODE SELECT(6/10): the read-write error recovery (0x01),
//! caching (0x08) and control (0x0A) pages, block descriptors, WP and DPOFUA.
//!
//! No page is changeable (as in IET): MODE SELECT accepts a parameter list only when
//! every page in it equals the current values, and answers any change with INVALID FIELD
//! IN PARAMETER LIST pointing at the first differing byte. Saved pages do not exist, so
//! PC=3 gets SAVING PARAMETERS NOT SUPPORTED.

use iomodes::{Capabilities, Geometry};

use super::sense::{Failure, FieldPointer};

/// Page codes we implement, in the order MODE SENSE 0x3F returns them.
const PAGES: [u8; 3] = [0x01, 0x08, 0x0A];
const ALL_PAGES: u8 = 0x3F;

/// Device-specific parameter bits of the mode parameter header (SBC-4 6.5.1).
const WP: u8 = 0x80;
const DPOFUA: u8 = 0x10;

fn page_bytes(code: u8, changeable: bool, caps: &Capabilities) -> Vec<u8> {
    match code {
        0x01 => {
            // Read-write error recovery: all zeroes (no retries, no error reporting
            // knobs); nothing is changeable.
            let mut p = vec![0u8; 12];
            p[0] = 0x01;
            p[1] = 0x0A;
            p
        }
        0x08 => {
            let mut p = vec![0u8; 20];
            p[0] = 0x08;
            p[1] = 0x12;
            if !changeable && caps.write_cache {
                p[2] |= 0x04; // WCE; RCD stays 0: reads may be served from the page cache
            }
            p
        }
        0x0A => {
            let mut p = vec![0u8; 12];
            p[0] = 0x0A;
            p[1] = 0x0A;
            if !changeable {
                p[2] = 0x02; // GLTSD: no log pages are saved
                p[3] = 0x10; // QUEUE ALGORITHM MODIFIER 1: unrestricted reordering
                p[4] = 0x40; // TAS: LIO reports aborted tasks (emulate_tas=1)
                p[8] = 0xFF; // BUSY TIMEOUT PERIOD: unlimited
                p[9] = 0xFF;
            }
            p
        }
        _ => Vec::new(),
    }
}

/// MODE SENSE parameters, already range-checked by `cdb::parse`.
pub struct SenseRequest {
    pub ten: bool,
    pub dbd: bool,
    pub llbaa: bool,
    pub pc: u8,
    pub page: u8,
    pub subpage: u8,
}

/// Builds the whole MODE SENSE data (the caller truncates it to the allocation length).
pub fn sense(
    req: &SenseRequest,
    geometry: &Geometry,
    caps: &Capabilities,
) -> Result<Vec<u8>, Failure> {
    if req.pc == 3 {
        return Err(Failure::SavingParametersNotSupported);
    }
    // Subpage 0xFF with page 0x3F means "all pages and subpages"; we have no subpages.
    let pages: Vec<u8> = match (req.page, req.subpage) {
        (ALL_PAGES, 0x00 | 0xFF) => PAGES.to_vec(),
        (p, 0x00) if PAGES.contains(&p) => vec![p],
        (p, _) if PAGES.contains(&p) || p == ALL_PAGES => {
            return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(3)))
        }
        _ => return Err(Failure::InvalidFieldInCdb(FieldPointer::bit(2, 5))),
    };
    let changeable = req.pc == 1;

    let mut device_specific = DPOFUA;
    if !caps.can_write {
        device_specific |= WP;
    }

    let mut bd = Vec::new();
    if !req.dbd {
        let bs = geometry.block_size;
        if req.llbaa {
            bd.extend_from_slice(&if changeable { 0 } else { geometry.blocks }.to_be_bytes());
            bd.extend_from_slice(&[0; 4]);
            bd.extend_from_slice(&if changeable { 0 } else { bs }.to_be_bytes());
        } else {
            let n = if changeable {
                0
            } else {
                u32::try_from(geometry.blocks).unwrap_or(u32::MAX)
            };
            bd.extend_from_slice(&n.to_be_bytes());
            let bl = if changeable { 0 } else { bs };
            bd.extend_from_slice(&bl.to_be_bytes());
            bd[4] = 0; // density code
        }
    }

    let mut body = Vec::new();
    for p in pages {
        body.extend_from_slice(&page_bytes(p, changeable, caps));
    }

    let mut d = Vec::new();
    if req.ten {
        let total = 8 + bd.len() + body.len();
        d.extend_from_slice(&((total - 2) as u16).to_be_bytes());
        d.push(0); // medium type
        d.push(device_specific);
        d.push(if req.llbaa && !req.dbd { 0x01 } else { 0 }); // LONGLBA
        d.push(0);
        d.extend_from_slice(&(bd.len() as u16).to_be_bytes());
    } else {
        let total = 4 + bd.len() + body.len();
        d.push((total - 1) as u8);
        d.push(0);
        d.push(device_specific);
        d.push(bd.len() as u8);
    }
    d.extend_from_slice(&bd);
    d.extend_from_slice(&body);
    Ok(d)
}

fn param_err(byte: usize) -> Failure {
    Failure::InvalidFieldInParameterList(FieldPointer::byte(byte))
}

/// Validates a MODE SELECT parameter list: accepted only when it changes nothing.
pub fn select(
    ten: bool,
    list: &[u8],
    geometry: &Geometry,
    caps: &Capabilities,
) -> Result<(), Failure> {
    if list.is_empty() {
        return Ok(());
    }
    let header_len = if ten { 8 } else { 4 };
    if list.len() < header_len {
        return Err(Failure::ParameterListLength);
    }
    // The MODE DATA LENGTH field is reserved in MODE SELECT and the device-specific
    // parameter's WP/DPOFUA are ignored (SBC-4 6.5.1); the medium type must be 0.
    let (medium_type_at, bd_len, long_lba) = if ten {
        (
            2,
            usize::from(u16::from_be_bytes([list[6], list[7]])),
            list[4] & 0x01 != 0,
        )
    } else {
        (1, usize::from(list[3]), false)
    };
    if list[medium_type_at] != 0 {
        return Err(param_err(medium_type_at));
    }
    if ten && list[4] & !0x01 != 0 {
        return Err(param_err(4));
    }
    let mut pos = header_len;
    if list.len() < pos + bd_len {
        return Err(Failure::ParameterListLength);
    }
    let desc_len = if long_lba { 16 } else { 8 };
    if bd_len % desc_len != 0 {
        return Err(param_err(if ten { 6 } else { 3 }));
    }
    for _ in 0..bd_len / desc_len {
        let d = &list[pos..pos + desc_len];
        let (blocks, block_len, reserved_ok) = if long_lba {
            let mut n = [0u8; 8];
            n.copy_from_slice(&d[..8]);
            (
                u64::from_be_bytes(n),
                u32::from_be_bytes([d[12], d[13], d[14], d[15]]),
                d[8..12] == [0; 4],
            )
        } else {
            (
                u64::from(u32::from_be_bytes([d[0], d[1], d[2], d[3]])),
                u32::from_be_bytes([0, d[5], d[6], d[7]]),
                d[4] == 0,
            )
        };
        if !reserved_ok {
            return Err(param_err(pos + if long_lba { 8 } else { 4 }));
        }
        // NUMBER OF LOGICAL BLOCKS 0 means "no change"; anything else must be the
        // current capacity (short form saturates at 0xFFFFFFFF).
        let current = if long_lba {
            geometry.blocks
        } else {
            geometry.blocks.min(u64::from(u32::MAX))
        };
        if blocks != 0 && blocks != current {
            return Err(param_err(pos));
        }
        if block_len != geometry.block_size {
            return Err(param_err(pos + if long_lba { 12 } else { 5 }));
        }
        pos += desc_len;
    }
    while pos < list.len() {
        let code = list[pos];
        if code & 0x40 != 0 {
            // SPF: subpage format; we have no subpages.
            return Err(Failure::InvalidFieldInParameterList(FieldPointer::bit(
                pos, 6,
            )));
        }
        let page = code & 0x3F;
        if list.len() < pos + 2 {
            return Err(Failure::ParameterListLength);
        }
        let current = page_bytes(page, false, caps);
        if current.is_empty() {
            return Err(param_err(pos));
        }
        let len = usize::from(list[pos + 1]);
        if len != current.len() - 2 {
            return Err(param_err(pos + 1));
        }
        if list.len() < pos + 2 + len {
            return Err(Failure::ParameterListLength);
        }
        // PS (bit 7 of the page code byte) is reserved in MODE SELECT; ignore it as
        // initiators often echo MODE SENSE data back unchanged.
        for i in 2..current.len() {
            if list[pos + i] != current[i] {
                return Err(param_err(pos + i));
            }
        }
        pos += 2 + len;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(write_cache: bool, can_write: bool) -> Capabilities {
        Capabilities {
            can_write,
            can_flush: true,
            can_fua: true,
            can_discard: false,
            discard_zeroes: false,
            write_cache,
            rotational: false,
            optimal_transfer_bytes: 0,
        }
    }

    const GEO: Geometry = Geometry {
        block_size: 512,
        blocks: 2048,
        physical_block_size: 512,
    };

    #[test]
    fn sense_then_select_round_trips() {
        for ten in [false, true] {
            let req = SenseRequest {
                ten,
                dbd: false,
                llbaa: ten,
                pc: 0,
                page: ALL_PAGES,
                subpage: 0,
            };
            let c = caps(true, true);
            let mut d = sense(&req, &GEO, &c).unwrap();
            assert_eq!(select(ten, &d, &GEO, &c), Ok(()));
            // Flip WCE: refused, pointing at the caching page's byte 2.
            let caching = if ten { 8 + 16 + 12 } else { 4 + 8 + 12 };
            assert_eq!(d[caching], 0x08);
            d[caching + 2] ^= 0x04;
            assert_eq!(select(ten, &d, &GEO, &c), Err(param_err(caching + 2)));
        }
    }
}
