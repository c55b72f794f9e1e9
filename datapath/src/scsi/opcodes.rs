//! REPORT SUPPORTED OPERATION CODES and REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS
//! (MAINTENANCE IN 0xA3, service actions 0x0C and 0x0D), built from the `cdb::OPCODES`
//! table so what we report is exactly what we accept.

use iomodes::Capabilities;

use super::cdb::{has_service_action, OpSpec, OPCODES};
use super::sense::{Failure, FieldPointer};

/// RECOMMENDED COMMAND TIMEOUT we report (seconds): LIO's default `cmd_time_out`.
const RECOMMENDED_TIMEOUT_S: u32 = 30;

fn supported(o: &OpSpec, caps: &Capabilities) -> bool {
    o.available(caps)
}

fn timeouts_descriptor() -> [u8; 12] {
    let mut t = [0u8; 12];
    t[1] = 0x0A;
    // NOMINAL COMMAND PROCESSING TIMEOUT stays 0 (not specified): it depends on the store.
    t[8..12].copy_from_slice(&RECOMMENDED_TIMEOUT_S.to_be_bytes());
    t
}

/// The whole REPORT SUPPORTED OPERATION CODES data for the given options.
pub fn report_opcodes(
    rctd: bool,
    options: u8,
    opcode: u8,
    sa: u16,
    caps: &Capabilities,
) -> Result<Vec<u8>, Failure> {
    let rows = OPCODES.iter().filter(|o| supported(o, caps));
    if options == 0 {
        let mut body = Vec::new();
        for o in rows {
            body.push(o.opcode);
            body.push(0);
            body.extend_from_slice(&o.service_action.unwrap_or(0).to_be_bytes());
            body.push(0);
            let mut flags = 0u8;
            if rctd {
                flags |= 0x02; // CTDP
            }
            if o.service_action.is_some() {
                flags |= 0x01; // SERVACTV
            }
            body.push(flags);
            body.extend_from_slice(&(o.usage.len() as u16).to_be_bytes());
            if rctd {
                body.extend_from_slice(&timeouts_descriptor());
            }
        }
        let mut d = (body.len() as u32).to_be_bytes().to_vec();
        d.extend_from_slice(&body);
        return Ok(d);
    }

    let with_sa = has_service_action(opcode);
    let wanted_sa = match options {
        1 if with_sa => return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(3))),
        1 => None,
        2 if !with_sa => return Err(Failure::InvalidFieldInCdb(FieldPointer::byte(3))),
        2 => Some(sa),
        _ if with_sa => Some(sa),
        _ => None,
    };
    let found = OPCODES
        .iter()
        .filter(|o| supported(o, caps))
        .find(|o| o.opcode == opcode && (wanted_sa.is_none() || o.service_action == wanted_sa));
    let mut d = vec![0u8; 4];
    match found {
        Some(o) => {
            d[1] = 0x03; // SUPPORT: supported as the standard describes
            if rctd {
                d[1] |= 0x80; // CTDP
            }
            d[2..4].copy_from_slice(&(o.usage.len() as u16).to_be_bytes());
            d.extend_from_slice(o.usage);
            if rctd {
                d.extend_from_slice(&timeouts_descriptor());
            }
        }
        None => d[1] = 0x01, // SUPPORT: not supported
    }
    Ok(d)
}

/// REPORT SUPPORTED TASK MANAGEMENT FUNCTIONS: what LIO's core does for a passthrough
/// device (the kernel handles every TMF; TCMU only sees notifications). Linux 5.10+
/// implements ABORT TASK, ABORT TASK SET and LOGICAL UNIT RESET; CLEAR ACA, CLEAR TASK
/// SET and the target resets are answered "function not supported", and iSCSI has no
/// I_T NEXUS RESET or QUERY TASK functions.
pub fn report_tmf(repd: bool) -> Vec<u8> {
    let mut d = vec![0u8; if repd { 16 } else { 4 }];
    d[0] = 0x80 | 0x40 | 0x08; // ATS, ATSS, LURS
    if repd {
        d[3] = 0x0C; // ADDITIONAL DATA LENGTH
    }
    d
}
