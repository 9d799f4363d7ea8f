//! The open-files limit: every connection is a file descriptor, and a
//! node left at the usual soft limit of 1,024 is shut out by a client
//! holding a thousand idle connections.

use std::io;

/// The limit before and after raising it.
#[derive(Clone, Copy, Debug)]
pub struct OpenFiles {
    pub was: u64,
    pub soft: u64,
    pub hard: u64,
}

/// Raises this process's soft open-files limit to its hard limit.
pub fn raise() -> io::Result<OpenFiles> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let was = limit.rlim_cur;
    if limit.rlim_cur < limit.rlim_max {
        limit.rlim_cur = limit.rlim_max;
        // SAFETY: setrlimit reads the struct we own.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(OpenFiles {
        was,
        soft: limit.rlim_cur,
        hard: limit.rlim_max,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let files = super::raise().unwrap();
        assert_eq!(files.soft, files.hard);
        assert!(files.was <= files.soft);
    }
}
