# vibest-pty: see .zshenv in this directory.
__vpty_source_user .zlogin last
