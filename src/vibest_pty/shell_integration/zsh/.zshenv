# vibest-pty shell integration for zsh: the daemon set ZDOTDIR to this directory, so zsh reads our .zshenv,
# .zprofile, .zshrc and .zlogin. Each one sources the user's file of the same name with the user's ZDOTDIR in
# place (unset ZDOTDIR means $HOME, as zsh does), then points ZDOTDIR back here for the next stage. The hooks
# are installed after the user's .zshrc (see vibest-pty-integration.zsh); ZDOTDIR is the user's again after
# the last stage (.zshrc for a non-login shell, .zlogin for a login one).
# Everything is quoted/builtin so that aliases the user's files define cannot break us.

'builtin' 'typeset' -g __vpty_dir="${${(%):-%x}:A:h}"

__vpty_user_zdotdir() {
    if [[ -n "${VIBEST_PTY_ZSH_ZDOTDIR+x}" ]]; then
        'builtin' 'export' ZDOTDIR="$VIBEST_PTY_ZSH_ZDOTDIR"
    else
        'builtin' 'unset' 'ZDOTDIR'
    fi
}

# Source the user's startup file $1 with their ZDOTDIR, then remember any ZDOTDIR change it made (an XDG
# layout sets ZDOTDIR in ~/.zshenv) for the later stages, and put ours back unless $2 says this was the last.
__vpty_source_user() {
    __vpty_user_zdotdir
    {
        'builtin' 'typeset' __vpty_f="${ZDOTDIR-$HOME}/$1"
        # zsh skips unreadable startup files; so do we.
        [[ ! -r "$__vpty_f" ]] || 'builtin' 'source' '--' "$__vpty_f"
    } always {
        if [[ -n "${ZDOTDIR+x}" ]]; then
            'builtin' 'export' VIBEST_PTY_ZSH_ZDOTDIR="$ZDOTDIR"
        else
            'builtin' 'unset' 'VIBEST_PTY_ZSH_ZDOTDIR'
        fi
        if [[ "$2" == last ]]; then
            __vpty_user_zdotdir
            'builtin' 'unset' 'VIBEST_PTY_ZSH_ZDOTDIR'
            'builtin' 'unfunction' '__vpty_user_zdotdir' '__vpty_source_user'
        else
            'builtin' 'export' ZDOTDIR="$__vpty_dir"
        fi
    }
}

if [[ -o 'interactive' ]]; then
    __vpty_source_user .zshenv
    # zsh -f / NO_RCS after .zshenv: no later stage will run, so restore now.
    [[ -o 'rcs' ]] || { __vpty_user_zdotdir; 'builtin' 'unset' 'VIBEST_PTY_ZSH_ZDOTDIR'; }
else
    __vpty_source_user .zshenv last
fi
