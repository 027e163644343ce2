# vibest-pty shell integration for fish (OSC 133 marks + OSC 7 cwd). The daemon put our directory first in
# XDG_DATA_DIRS, so fish sources this file from vendor_conf.d before the user's config.fish; we restore
# XDG_DATA_DIRS at once so programs started from fish see the user's value.
# Marks carry aid=<nonce>, the per-session secret the daemon checks (see shell_integration/__init__.py):
#   A prompt start, B prompt end (around fish_prompt), C;cmdline_url=ENC (fish_preexec), D;STATUS
#   (fish_postexec). fish >= 4 prints its own marks too; those carry no aid and the daemon ignores them.

status is-interactive; or exit 0

if set -q VIBEST_PTY_FISH_XDG_DATA_DIRS
    set -gx XDG_DATA_DIRS $VIBEST_PTY_FISH_XDG_DATA_DIRS
    set -e VIBEST_PTY_FISH_XDG_DATA_DIRS
else
    set -e XDG_DATA_DIRS
end

set -g __vpty_aid "$VIBEST_PTY_AID"
set -e VIBEST_PTY_AID
set -g __vpty_running 0
set -g __vpty_last_cwd ""

function __vpty_preexec --on-event fish_preexec
    set -g __vpty_running 1
    # URL style escapes every byte outside [A-Za-z0-9/._~-], so no control byte or ; reaches the OSC.
    # Encode first (one line out), then cap: ~16 KiB of command line is plenty for an event.
    set -l enc (string escape --style=url -- "$argv[1]" | string sub -l 49152)
    printf '\e]133;C;aid=%s;cmdline_url=%s\a' $__vpty_aid "$enc"
end

function __vpty_postexec --on-event fish_postexec
    set -l ret $status
    if test "$__vpty_running" = 1
        printf '\e]133;D;%s;aid=%s\a' $ret $__vpty_aid
        set -g __vpty_running 0
    end
end

# fish_prompt is often defined later (config.fish, an autoloaded function file, a theme), so wrap it just
# before each prompt: the event fires before fish calls the function. A redefinition is wrapped again.
function __vpty_on_prompt --on-event fish_prompt
    if test "$__vpty_last_cwd" != "$PWD"
        set -g __vpty_last_cwd "$PWD"
        printf '\e]7;file://%s%s\a' (string escape --style=url -- $hostname) (string escape --style=url -- $PWD | string replace -a '%2F' '/')
    end
    printf '\e]133;A;aid=%s\a' $__vpty_aid
    if not functions -q __vpty_wrapped_prompt; or not string match -q '*__vpty_user_prompt*' (functions fish_prompt | string collect)
        if functions -q fish_prompt
            functions -e __vpty_user_prompt
            functions -c fish_prompt __vpty_user_prompt
        else
            function __vpty_user_prompt
                printf '> '
            end
        end
        function fish_prompt
            __vpty_user_prompt
            printf '\e]133;B;aid=%s\a' $__vpty_aid
        end
        function __vpty_wrapped_prompt
        end
    end
end
