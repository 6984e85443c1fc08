-- A Tarantool instance for developing and testing refacen (the tests start it):
--
--   REFACEN_TARANTOOL_LISTEN=127.0.0.1:3301 REFACEN_TARANTOOL_DIR=/tmp/tt tarantool tarantool/init.lua
--
-- DEVELOPMENT ONLY: it grants guest, i.e. anyone who can reach the port without a password,
-- the refacen_client role. A production instance loads refacen.lua into its own init script
-- and gives the role to a user with a password instead (README.md in this directory).

local fio = require('fio')

-- refacen.lua lies next to this file, wherever the instance is started from. Resolved before
-- box.cfg, which changes the working directory to work_dir.
local here = fio.dirname(fio.abspath(debug.getinfo(1, 'S').source:sub(2)))
package.path = here .. '/?.lua;' .. package.path

box.cfg({
    work_dir = os.getenv('REFACEN_TARANTOOL_DIR') or '.',
    memtx_memory = (tonumber(os.getenv('REFACEN_TARANTOOL_MEMTX_MB')) or 512) * 1024 * 1024,
})

require('refacen')

box.once('refacen_dev_guest', function()
    box.schema.user.grant('guest', 'refacen_client')
end)

-- Listening only now, with refacen loaded: a client that reconnects to a restarting instance
-- never finds it without the refacen functions.
box.cfg({ listen = os.getenv('REFACEN_TARANTOOL_LISTEN') or '127.0.0.1:3301' })
