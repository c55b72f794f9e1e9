//! Two LUNs never serve one backing store: the second is refused with an error naming
//! both, however the path spells it (symlink, hard link), unless both are read-only.

mod provision_common;

use std::fs;

use provision_common::*;

#[test]
fn a_second_lun_on_the_same_file_is_refused_by_identity() {
    let fx = Fixture::new();
    let (mut st, failures) = sim_state(&fx, fx.config());
    assert_eq!(failures, 0);
    let a = fx.path("a.img");
    let link = fx.path("alias.img");
    std::os::unix::fs::symlink(&a, &link).expect("symlink");
    let hard = fx.path("hard.img");
    fs::hard_link(&a, &hard).expect("hard link");
    for p in [&a, &link, &hard] {
        let e = st
            .lun_new(2, 3, &format!("Path={},Type=fileio", p.display()))
            .unwrap_err();
        assert_eq!(e.errno(), libc::EBUSY, "{e}");
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains(&format!(
                "LUN 0 of target 1 already serves (as {})",
                a.display()
            )),
            "{msg}"
        );
    }
    assert!(st.lun_show(2, 3).is_err());
    // A copy is another file.
    let copy = fx.path("copy.img");
    fs::copy(&a, &copy).expect("copy");
    st.lun_new(2, 3, &format!("Path={},Type=fileio", copy.display()))
        .expect("a copy is fine");
    // b.img is LUN 1 of T1, read-only: another read-only LUN may share it, a
    // writable one may not.
    let b = fx.path("b.img").display().to_string();
    st.lun_new(2, 4, &format!("Path={b},Type=fileio,IOMode=ro"))
        .expect("two read-only LUNs");
    let e = st
        .lun_new(2, 5, &format!("Path={b},Type=fileio,IOMode=wt"))
        .unwrap_err();
    assert_eq!(e.errno(), libc::EBUSY, "{e}");
}

#[test]
fn a_config_with_two_luns_on_one_file_brings_up_the_first_only() {
    let fx = Fixture::new();
    let mut config = fx.config();
    let t2 = config.targets.iter_mut().find(|t| t.name == T2).unwrap();
    let mut dup = t2.luns[&0].clone();
    dup.lun = 7;
    dup.params =
        lunspec::LunParams::parse(&format!("Path={},Type=fileio", fx.path("a.img").display()))
            .expect("params")
            .params;
    t2.luns.insert(7, dup);
    let (st, failures) = sim_state(&fx, config);
    assert_eq!(failures, 1);
    assert!(st.lun_show(1, 0).is_ok());
    assert!(st.lun_show(2, 7).is_err());
}
