# vibest-pty: see .zshenv in this directory. A login shell still has .zlogin to read.
if [[ -o 'login' ]]; then
    __vpty_source_user .zshrc
else
    __vpty_source_user .zshrc last
fi
'builtin' 'source' '--' "$__vpty_dir/vibest-pty-integration.zsh"
