-- refacen's search store inside Tarantool. refacen writes the facens (face feature vectors)
-- of each model into one space per model and searches them here, by brute force next to the
-- data, so that only the k nearest faces cross the network.
--
-- Load it into an instance after box.cfg{} with require('refacen'): it defines the global table
-- `refacen`, whose functions refacen's host calls over IPROTO ("refacen.put" and so on). They
-- are registered as setuid functions that the role `refacen_client` may execute, so the user
-- refacen connects as needs that role and nothing else; space names are confined to
-- `facens_*` spaces that refacen created. See README.md in this directory.

local ffi = require('ffi')
local fiber = require('fiber')
local msgpack = require('msgpack')

if type(box.cfg) == 'function' then
    error("refacen.lua: call box.cfg{} before require('refacen')", 0)
end

local PROTOCOL = 2
local META = 'refacen_meta'
local ROLE = 'refacen_client'
local MAX_K = 10000
local MAX_FACEN_SIZE = 65536
-- Rows per transaction when sweeping stale rows, and rows scanned by a search between yields,
-- so that neither holds up the instance's other requests for long.
local SWEEP_BATCH = 1000
local SEARCH_YIELD_EVERY = 16384

-- Tarantool's C API, to read a tuple's fields in place: a search then allocates nothing per
-- row (a Lua tuple object and a string per row would cost several times the arithmetic).
-- box_replace writes a tuple given as msgpack, the only way in this Tarantool to store a Lua
-- string as MP_BIN (Lua strings are encoded as MP_STR, which a varbinary field refuses).
ffi.cdef([[
struct tuple;
struct iterator;
struct iterator *box_index_iterator(uint32_t space_id, uint32_t index_id, int type,
                                    const char *key, const char *key_end);
int box_iterator_next(struct iterator *iterator, struct tuple **result);
void box_iterator_free(struct iterator *iterator);
const char *box_tuple_field(struct tuple *tuple, uint32_t fieldno);
int box_replace(uint32_t space_id, const char *tuple, const char *tuple_end, struct tuple **result);
]])
local C = ffi.C
local ITER_ALL = 2
local EMPTY_KEY = ffi.new('const char[1]', 0x90)

local refacen = {}

local function fail(fmt, ...)
    box.error({ code = box.error.ILLEGAL_PARAMS, reason = string.format(fmt, ...) })
end

local function meta()
    return box.space[META]
end

local function space_key(name)
    return 'space:' .. name
end

local function check_name(fn, name)
    if type(name) ~= 'string' or not name:match('^facens_[a-z0-9_]+$') then
        fail("%s: the space name must be 'facens_' followed by [a-z0-9_], got %s", fn, tostring(name))
    end
end

-- The space's record {model_name, facen_size, generation, syncing, checkpoint} and the space.
local function lookup(fn, name)
    check_name(fn, name)
    local record = meta():get(space_key(name))
    local space = box.space[name]
    if record == nil or space == nil then
        fail("%s: space '%s' does not exist on this instance (refacen.ensure_space creates it)", fn, name)
    end
    return record[2], space
end

local function save(name, info)
    meta():replace({ space_key(name), info })
end

local function is_id(v)
    if type(v) == 'number' then
        return v >= 0 and v < 2 ^ 64 and v % 1 == 0
    end
    return ffi.istype('uint64_t', v) or (ffi.istype('int64_t', v) and v >= 0)
end

local function check_id(fn, v, what)
    if not is_id(v) then
        fail('%s: %s must be an unsigned integer, got %s', fn, what, tostring(v))
    end
end

local function check_array(fn, v, what)
    if type(v) ~= 'table' then
        fail('%s: %s must be an array, got %s', fn, what, type(v))
    end
end

local function bin_header(len)
    if len < 0x100 then
        return string.char(0xc4, len)
    elseif len < 0x10000 then
        return string.char(0xc5, bit.rshift(len, 8), bit.band(len, 0xff))
    end
    return string.char(0xc6, bit.rshift(len, 24), bit.band(bit.rshift(len, 16), 0xff),
        bit.band(bit.rshift(len, 8), 0xff), bit.band(len, 0xff))
end

-- The unsigned integer encoded at p (msgpack).
local function mp_uint(p)
    local b = p[0]
    if b < 0x80 then
        return b
    elseif b == 0xcc then
        return p[1]
    elseif b == 0xcd then
        return p[1] * 0x100 + p[2]
    elseif b == 0xce then
        return ((p[1] * 0x100 + p[2]) * 0x100 + p[3]) * 0x100 + p[4]
    end
    local v = 0ULL
    for i = 1, 8 do
        v = v * 0x100 + p[i]
    end
    return v
end

-- The payload of the MP_BIN at p and its length.
local function mp_bin(p)
    local b = p[0]
    if b == 0xc4 then
        return p + 2, p[1]
    elseif b == 0xc5 then
        return p + 3, p[1] * 0x100 + p[2]
    end
    return p + 5, ((p[1] * 0x100 + p[2]) * 0x100 + p[3]) * 0x100 + p[4]
end

function refacen.version()
    return PROTOCOL
end

function refacen.ensure_space(name, model_name, facen_size)
    local fn = 'refacen.ensure_space'
    check_name(fn, name)
    if type(model_name) ~= 'string' or model_name == '' then
        fail('%s: the model name must be a non-empty string, got %s', fn, tostring(model_name))
    end
    if type(facen_size) ~= 'number' or facen_size % 1 ~= 0 or facen_size < 1 or facen_size > MAX_FACEN_SIZE then
        fail('%s: the facen size must be an integer in 1..%d, got %s', fn, MAX_FACEN_SIZE, tostring(facen_size))
    end
    local record = meta():get(space_key(name))
    if record == nil then
        if box.space[name] ~= nil then
            fail("%s: space '%s' exists but refacen did not create it; drop or rename it", fn, name)
        end
        -- The record goes first: a crash before the space is created leaves a record that the
        -- next ensure_space completes, never a space without one.
        meta():insert({ space_key(name), { model_name = model_name, facen_size = facen_size, generation = 0 } })
    else
        local info = record[2]
        if info.facen_size ~= facen_size then
            fail("%s: space '%s' holds %d-value facens, not %d", fn, name, info.facen_size, facen_size)
        end
        if info.model_name ~= model_name then
            fail("%s: space '%s' holds facens of model '%s', not '%s' (both names map to this space name)",
                fn, name, info.model_name, model_name)
        end
    end
    local space = box.schema.space.create(name, {
        if_not_exists = true,
        format = {
            { name = 'id', type = 'unsigned' },
            { name = 'facen', type = 'varbinary' },
            { name = 'gen', type = 'unsigned' },
        },
    })
    space:create_index('primary', { if_not_exists = true, type = 'TREE', parts = { { 'id', 'unsigned' } } })
    -- finish_sync finds the rows of older generations by this index instead of a full scan.
    space:create_index('gen', { if_not_exists = true, type = 'TREE', unique = false, parts = { { 'gen', 'unsigned' } } })
    return facen_size
end

function refacen.put(name, rows)
    local fn = 'refacen.put'
    local info, space = lookup(fn, name)
    check_array(fn, rows, 'rows')
    local bytes = info.facen_size * 4
    for i, row in ipairs(rows) do
        check_array(fn, row, string.format('row %d', i))
        check_id(fn, row[1], string.format('the id of row %d', i))
        local facen = row[2]
        if type(facen) ~= 'string' or #facen ~= bytes then
            fail("%s: space '%s' holds %d-value facens (%d bytes); row %d (id %s) has %s", fn, name,
                info.facen_size, bytes, i, tostring(row[1]),
                type(facen) == 'string' and string.format('%d bytes', #facen) or type(facen))
        end
    end
    -- Every row is stamped with the space's current generation, so that rows written by anyone
    -- during a sync are not swept as stale by finish_sync.
    local header = bin_header(bytes)
    local gen = msgpack.encode(info.generation)
    local space_id = space.id
    box.atomic(function()
        for _, row in ipairs(rows) do
            local tuple = '\x93' .. msgpack.encode(row[1]) .. header .. row[2] .. gen
            local p = ffi.cast('const char *', tuple)
            if C.box_replace(space_id, p, p + #tuple, nil) ~= 0 then
                box.error()
            end
        end
    end)
    return #rows
end

function refacen.delete(name, ids)
    local fn = 'refacen.delete'
    local _, space = lookup(fn, name)
    check_array(fn, ids, 'ids')
    for i, id in ipairs(ids) do
        check_id(fn, id, string.format('id %d', i))
    end
    local deleted = 0
    box.atomic(function()
        for _, id in ipairs(ids) do
            if space:delete(id) ~= nil then
                deleted = deleted + 1
            end
        end
    end)
    return deleted
end

function refacen.count(name)
    local _, space = lookup('refacen.count', name)
    return space:len()
end

-- The k nearest rows to the query, nearest first, ties by id: a max-heap of the k best
-- (distance, id) so far, the worst at its root; an id is decoded only for a row that enters.
function refacen.search(name, query, k, metric)
    local fn = 'refacen.search'
    local info, space = lookup(fn, name)
    local n = info.facen_size
    if type(query) ~= 'string' or #query ~= n * 4 then
        fail("%s: space '%s' holds %d-value facens (%d bytes); the query has %s", fn, name, n, n * 4,
            type(query) == 'string' and string.format('%d bytes', #query) or type(query))
    end
    if type(k) ~= 'number' or k % 1 ~= 0 or k < 1 or k > MAX_K then
        fail('%s: k must be an integer in 1..%d, got %s', fn, MAX_K, tostring(k))
    end
    if metric ~= 'l2' and metric ~= 'cosine' then
        fail("%s: metric must be 'l2' or 'cosine', got %s", fn, tostring(metric))
    end
    local cosine = metric == 'cosine'

    local q = ffi.new('float[?]', n)
    ffi.copy(q, query, n * 4)
    local qnorm = 0
    for j = 0, n - 1 do
        qnorm = qnorm + q[j] * q[j]
    end
    qnorm = math.sqrt(qnorm)

    local dist = ffi.new('double[?]', k + 1)
    local ids = ffi.new('uint64_t[?]', k + 1)
    local size = 0
    -- A max-heap of the k nearest so far, the farthest on top; ties go by id.
    local function nearer(a, b)
        return dist[a] < dist[b] or (dist[a] == dist[b] and ids[a] < ids[b])
    end
    local function swap(a, b)
        dist[a], dist[b] = dist[b], dist[a]
        ids[a], ids[b] = ids[b], ids[a]
    end
    local function sift_down(i)
        while true do
            local c = 2 * i
            if c > size then
                return
            end
            if c < size and nearer(c, c + 1) then
                c = c + 1
            end
            if nearer(c, i) then
                return
            end
            swap(i, c)
            i = c
        end
    end
    local function sift_up(i)
        while i > 1 do
            local p = bit.rshift(i, 1)
            if nearer(i, p) then
                return
            end
            swap(i, p)
            i = p
        end
    end

    local iterator = C.box_index_iterator(space.id, 0, ITER_ALL, EMPTY_KEY, EMPTY_KEY + 1)
    if iterator == nil then
        box.error()
    end
    iterator = ffi.gc(iterator, C.box_iterator_free)
    local out = ffi.new('struct tuple *[1]')
    local scanned = 0
    while true do
        if C.box_iterator_next(iterator, out) ~= 0 then
            box.error()
        end
        local tuple = out[0]
        if tuple == nil then
            break
        end
        local data, len = mp_bin(ffi.cast('const uint8_t *', C.box_tuple_field(tuple, 1)))
        if len ~= n * 4 then
            fail("%s: space '%s' row %s has a %d-byte facen, not %d: it was not written by refacen.put",
                fn, name, tostring(mp_uint(ffi.cast('const uint8_t *', C.box_tuple_field(tuple, 0)))), len, n * 4)
        end
        local x = ffi.cast('const float *', data)
        local d = 0
        if cosine then
            local dot, xnorm = 0, 0
            for j = 0, n - 1 do
                local v = x[j]
                dot = dot + v * q[j]
                xnorm = xnorm + v * v
            end
            local norms = qnorm * math.sqrt(xnorm)
            d = norms > 0 and 1 - dot / norms or 1
        else
            for j = 0, n - 1 do
                local v = x[j] - q[j]
                d = d + v * v
            end
        end
        -- Rows come in id order, so a row as far as the worst kept one loses the tie.
        if size < k then
            size = size + 1
            dist[size], ids[size] = d, mp_uint(ffi.cast('const uint8_t *', C.box_tuple_field(tuple, 0)))
            sift_up(size)
        elseif d < dist[1] then
            dist[1], ids[1] = d, mp_uint(ffi.cast('const uint8_t *', C.box_tuple_field(tuple, 0)))
            sift_down(1)
        end
        scanned = scanned + 1
        if scanned % SEARCH_YIELD_EVERY == 0 then
            fiber.yield()
        end
    end

    local result = {}
    for i = 1, size do
        result[i] = { ids[i], cosine and dist[i] or math.sqrt(dist[i]) }
    end
    table.sort(result, function(a, b)
        return a[2] < b[2] or (a[2] == b[2] and a[1] < b[1])
    end)
    return setmetatable(result, { __serialize = 'seq' })
end

function refacen.spaces()
    local result = setmetatable({}, { __serialize = 'seq' })
    for _, record in meta():pairs(space_key(''), { iterator = 'GE' }) do
        local name = record[1]:match('^space:(.*)$')
        if name == nil then
            break
        end
        local space = box.space[name]
        if space ~= nil then
            table.insert(result, { name, record[2].model_name, record[2].facen_size, space:len() })
        end
    end
    return result
end

function refacen.active()
    local record = meta():get('active')
    return record and record[2]
end

function refacen.activate(name)
    lookup('refacen.activate', name)
    meta():replace({ 'active', name })
    return name
end

-- Drops a refacen space; false when there is none of that name here.
function refacen.drop(name)
    local fn = 'refacen.drop'
    check_name(fn, name)
    if refacen.active() == name then
        fail("%s: space '%s' is the active space, which searches use; activate another one first", fn, name)
    end
    local record = meta():get(space_key(name))
    local space = box.space[name]
    if record == nil then
        if space ~= nil then
            fail("%s: space '%s' was not created by refacen; refacen does not drop it", fn, name)
        end
        return false
    end
    -- The space goes first: a crash in between leaves a record without a space, which
    -- ensure_space completes and everything else treats as no space.
    if space ~= nil then
        space:drop()
    end
    meta():delete(space_key(name))
    return true
end

-- {generation, checkpoint, facens} of the space's sync: the last face id recorded as copied
-- and how many facens the face store held up to it (box.NULL until the first checkpoint), so
-- that a resumed sync reads only the faces after it and still knows what to verify.
local function sync_state(info)
    local checkpoint = info.checkpoint == nil and box.NULL or info.checkpoint
    local facens = info.checkpoint_facens == nil and box.NULL or info.checkpoint_facens
    return { info.generation, checkpoint, facens }
end

-- Starts (or, with resume, continues) a sync of the space: every row copied from now on
-- carries the new generation, and finish_sync sweeps the rows that do not. Returns its
-- sync_state.
function refacen.begin_sync(name, resume)
    local fn = 'refacen.begin_sync'
    local info = lookup(fn, name)
    if resume and info.syncing then
        return sync_state(info)
    end
    info.generation = info.generation + 1
    info.syncing = true
    info.checkpoint = nil
    info.checkpoint_facens = nil
    save(name, info)
    return sync_state(info)
end

-- The sync_state of the space's unfinished sync; nil when it has none (or there is no such
-- space here). Changes nothing.
function refacen.sync_state(name)
    check_name('refacen.sync_state', name)
    local record = meta():get(space_key(name))
    if record == nil or not record[2].syncing then
        return nil
    end
    return sync_state(record[2])
end

-- Joins this instance to a sync another shard began: the same generation for the space here.
function refacen.join_sync(name, generation)
    local fn = 'refacen.join_sync'
    local info = lookup(fn, name)
    check_id(fn, generation, 'the generation')
    if not (info.syncing and info.generation == generation) then
        info.generation = generation
        info.syncing = true
        info.checkpoint = nil
        info.checkpoint_facens = nil
        save(name, info)
    end
    return generation
end

function refacen.checkpoint(name, last_id, facens)
    local fn = 'refacen.checkpoint'
    local info = lookup(fn, name)
    check_id(fn, last_id, 'the last id')
    check_id(fn, facens, 'the facen count')
    if not info.syncing then
        fail("%s: space '%s' has no sync in progress (refacen.begin_sync starts one)", fn, name)
    end
    info.checkpoint = last_id
    info.checkpoint_facens = facens
    save(name, info)
end

-- Ends the sync in progress: deletes the rows of older generations (faces the sync did not
-- copy again, so gone from the face store). Returns how many; 0 when no sync is in progress.
function refacen.finish_sync(name)
    local fn = 'refacen.finish_sync'
    local info, space = lookup(fn, name)
    if not info.syncing then
        return 0
    end
    local swept = 0
    while true do
        local stale = space.index.gen:select({ info.generation }, { iterator = 'LT', limit = SWEEP_BATCH })
        if #stale == 0 then
            break
        end
        box.atomic(function()
            for _, tuple in ipairs(stale) do
                space:delete(tuple[1])
            end
        end)
        swept = swept + #stale
    end
    info = lookup(fn, name)
    info.syncing = false
    info.checkpoint = nil
    info.checkpoint_facens = nil
    save(name, info)
    return swept
end

local FUNCTIONS = {
    'version', 'ensure_space', 'put', 'delete', 'count', 'search', 'spaces', 'active', 'activate',
    'drop', 'begin_sync', 'sync_state', 'join_sync', 'checkpoint', 'finish_sync',
}

-- Idempotent, so it runs on every load (and writes nothing once done).
local function install()
    box.schema.space.create(META, {
        if_not_exists = true,
        format = { { name = 'key', type = 'string' }, { name = 'value', type = 'any' } },
    })
    box.space[META]:create_index('primary', { if_not_exists = true, parts = { { 'key', 'string' } } })
    box.schema.role.create(ROLE, { if_not_exists = true })
    for _, f in ipairs(FUNCTIONS) do
        box.schema.func.create('refacen.' .. f, { setuid = true, if_not_exists = true })
        box.schema.role.grant(ROLE, 'execute', 'function', 'refacen.' .. f, { if_not_exists = true })
    end
end

install()
rawset(_G, 'refacen', refacen)
return refacen
