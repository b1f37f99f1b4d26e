"""The native Handle protocol front-ends: UDP and TCP on one port (2641 by default).

``start_native(service, host, port)`` binds TCP first and then UDP on the same port (port 0: the
kernel picks a TCP port, and UDP takes the same number, retrying if it is taken), wires the hot
answer cache to the core's commit listener, and returns the bound address and an async closer.
Both transports share one :class:`~idr.server.handler.NativeHandler` (so a challenge sent over
one can be answered over the other) and one :class:`~idr.server.hotcache.AnswerCache`.
See ``server/udp.py`` for the amplification rule and ``server/tcp.py`` for connection rules.

Worker processes (``idr serve --workers N``). One Python process answers UDP at about the
speed of a bare uvloop responder on one core, so more cores need more processes. Worker 0 (the
``idr serve`` process) binds UDP with SO_REUSEPORT and keeps everything that writes or holds
state across requests: TCP (all admin work, challenges, sessions), HTTP(S), replication. Workers
1…N-1 (:func:`start_workers`, each ``worker_main``) open the node's store themselves and bind
only UDP to the same port; the kernel spreads datagrams over the group by 4-tuple hash, so one
client's retries stay with one worker. UDP admin requests are refused (as Handle.Net's default
site does), so extra workers only read. Each has its own caches, kept coherent by following the
store's transaction log (``idr.runtime.follow``: ``last_seq()`` every 5 ms, then ``log_since`` →
``on_external_commit(keys)``, the path a replication mirror uses): an extra worker answers
a committed write within one poll, ~5 ms (the coherence test bounds it at 3 s on a loaded CI
machine and fails without the follower). A worker is started with ``start_new_session`` (Ctrl-C
goes to worker 0, which stops the others: SIGTERM, then SIGKILL after 30 s) and asks the kernel
for SIGTERM when worker 0 dies (``PR_SET_PDEATHSIG``), so none outlives it, even after SIGKILL.
Rejected alternatives: threads (the GIL serialises the hot path), fork after warm-up
(copy-on-write is undone by reference counting), one shared answer cache in shared memory
(every hit would pay for locking and a copy out of the shared segment).

Warm UDP (issue 14: ≥ 0.85× the minimal uvloop responder of bench/native_resolve.py, which
answers fixed bytes through uvloop's datagram protocol). What a warm answer costs beyond the
responder's is not Python work (the key, one lookup, the patch and the tally are a few hundred
ns) but memory: a lookup in a map of 100,000-1,000,000 answers touches ~9 cache lines nobody
touched lately (index, entry, key, the answer's 4-5 lines), and the kernel's own working set
for the send and receive pays for the evictions; the responder touches none (100,000 handles,
load 5-8: idr 10.5 µs CPU per answer against the responder's 7.6, 0.73×; rates 0.65×, medians
of ``--warm-rounds 3``). Measured:

* **reading in bursts** (kept: ``udp.DrainedSocket``): ``add_reader`` and ``recvfrom`` until the
  socket is empty (at most 64), instead of one uvloop callback per datagram; answers from memory
  sent with the socket's ``sendto``. On the minimal responder itself (only the reading changed):
  CPU per answer 0.95× (median of 3 alternating rounds). On idr (``--before`` the uvloop
  protocol, 100,000 handles, two runs of 3 and 4 alternating rounds, load 5-12): CPU per answer
  0.977×, 0.952×; rates 1.35×, 1.12× (medians). A 64 KiB ``recvfrom`` buffer (any datagram
  whole) costs part of the gain a 2 KiB one shows (0.91× on the responder), but a request is
  not cut. The same system calls remained per answer (``recvfrom``, ``sendto``) until the
  burst calls below;
* **a burst in one system call each way** (kept: ``idr.server._mmsg``, a C extension of ~200
  lines that ``pip install`` builds; ``DrainedSocket._drain_bursts``): one ``recvmmsg`` reads
  every datagram waiting (at most ``DRAIN_BURST``) and one ``sendmmsg`` sends the burst's
  answers, instead of a ``recvfrom_into`` and a ``sendto`` per datagram. Python's socket
  module, uvloop and asyncio offer neither call, nor does a maintained package; through
  ``ctypes`` each call costs ~1.5 µs and each message header more (the ``MSG_PEEK`` probe
  below). The sender's address is handed to the protocol as the usual ``(host, port)`` pair,
  cached by its packed bytes, and turned back into a ``sockaddr`` once per pair (4,096 of each
  kept), so the ``inet_ntop``/``sprintf`` and the parse per datagram noted below are gone too.
  On this machine, a VM whose system calls are dear, it was the largest single step of the
  warm path: ``native_resolve.py --handles 100000 --seconds 4 --rounds 4 --before`` main
  (2026-12-02, load ~1): CPU per warm answer 7.8 / 10.5 µs = **0.743×**, rates 1.35×
  (medians; rounds 1.24-1.48×); at 1M handles against the minimal responder, same day:
  **1.06×** its rate (CPU 8.1 against 8.6 µs), where main measured 0.80× (10.4 against 8.6)
  an hour before. IPv6 sockets, and a build without a C compiler, keep one call per datagram
  (``DrainedSocket._drain``, with the ``FIONREAD`` burst end below); the tests run both paths.
  An answer the kernel refuses ends one ``sendmmsg`` early: it is reported to the protocol as
  ``sendto``'s error is, and the rest go in a second call;
* **the answers of a burst sent at its end** (kept: ``DrainedSocket.send_later`` collects them,
  in order, before any other answer of the burst): sent one by one as each was ready, nearly
  every answer found a client that is faster than the server waiting for it, and on loopback the
  sender's ``sendmsg`` runs that client's wake-up (``perf``: ``sendmsg`` ~46% of a warm answer's
  samples, ~33% of a cold one's); together, the first wakes it and the rest find it running.
  ``--before`` (the same code sending at once) in one run, 100,000 handles, load ~7, 3 rounds:
  CPU per warm answer 12.1 / 15.1 µs = 0.80×, rates 1.29×, p50 latency 166 against 232 µs;
  CPU per cold answer 28.4 / 39.7 µs = 0.72×. The first answer of a burst waits for the rest
  of it (at most ``DRAIN_BURST`` datagrams, each from memory or one row). ``send_later`` is the
  list's own ``append`` of an (answer, address) pair: no Python frame per answer (0.09 against
  0.27-0.30 µs a call, ``timeit``; in the bench, within its noise: CPU 1.05× and 0.99× in two
  ``--before`` runs with the roles swapped, 100,000 handles, load 2-4);
* a 2 KiB ``recvfrom`` buffer, or ``recvfrom_into`` a buffer kept across calls and one copy
  out: no difference per datagram in isolation (1.85-2.07 µs each, ``timeit`` on loopback);
  huge pages for the heap (``PYTHONMALLOC=malloc``, glibc's ``hugetlb`` tunable): a lookup and
  patch in a map of 1M answers 2.3-2.7 µs either way — the misses are in the caches, not the TLB;
* fewer allocations on the hot path (key building by two ``startswith`` against the shape and
  one slice, per-shape maps): three allocations fewer, an estimated 0.1-0.15 µs, but a change
  of the cache's key scheme every front-end and the warm pass share; not done;
* negative answers in the hot map: hdlperf's misses are as many distinct names as hits (1M at
  1M handles), so a bounded map of them would rarely hit; a miss costs ~1.5 µs of Python
  (``AnswerCache.miss`` on a complete cache), 10% of requests: ~0.15 µs per answer.
* **one receive buffer kept for the socket's life** (kept: ``DrainedSocket._view``,
  ``recvfrom_into`` and one copy out at the datagram's size): ``recvfrom(65536)`` allocated 64
  KiB per datagram and shrank it, and glibc's ``malloc``/``free``/``malloc_consolidate`` were
  ~1.5% of a warm answer's ``perf`` samples (100,000 handles, the bench's warm server pinned
  to core 0); with the buffer they are gone from the profile (libc 9.3 → 7.2% of samples). In
  CPU per answer, 8 alternating pairs against main (load 3.5-4.5): medians 10.6 / 11.2 µs,
  0.95×, pair ratios 0.84-1.25: within this machine's noise. What the same profile shows of
  the rest: ``_Py_dict_lookup`` ~9.5% (nearly all on the loads of the probed entry: the map's
  cache misses), libpython 34-42% in all, the kernel ~50-54%; formatting the sender's address
  (``recvfrom`` → ``inet_ntop`` → ``sprintf``) and parsing it again for ``sendto`` ~1.5%,
  which Python's socket module does not let a caller skip.
* **the two fields written with ``struct.pack_into``** (kept: ``hotcache.put4``, the UDP and
  TCP hot paths and ``patch``): ``out[8:12] = data[8:12]`` into a ``bytearray`` first turns
  the ``bytes`` it is given into a temporary ``bytearray`` (~110-130 ns a field); ``pack_into``
  of a 4-byte ``4s`` writes in place. Copy and both fields of a 233-byte answer (``timeit``,
  4,096 answers of 100,000, load 3-4): 199 against 306 ns. One ``4s24x4s`` format for both
  fields (one call, 168 ns) writes its pad bytes — zeros — over the 24 bytes between them:
  ``test_a_hot_answer_carries_the_requests_id_and_expiration_and_nothing_else_changes``
  (UDP and TCP, the reference server's bytes with another RequestId and expiration) fails on it;
* **no failing ``recvfrom`` at the end of a burst of the usual size** (kept:
  ``DrainedSocket._expect``): a burst ended on the ``recvfrom`` that finds the socket empty —
  a system call plus a ``BlockingIOError`` built and caught, 1.1-1.9 µs (``timeit``), once a
  burst; under hdlperf (16 in flight, 100,000 handles) bursts average 15.65 datagrams, so
  ~0.07-0.12 µs an answer. A burst that has read as many datagrams as the last one that ended
  on an empty socket now asks ``FIONREAD`` (the next datagram's size, 0 for none: 0.42-0.46 µs,
  no exception) and stops when nothing waits; a larger burst is read on as before. Rejected:
  ``ctypes`` ``recv(MSG_PEEK)`` as the probe (1.5 µs, measured: the ``ctypes`` call costs more
  than the exception); stopping there without asking (not measured: a guess that can stick
  below the real burst size, every later burst then stopping early for a turn of the loop);
* both together, ``native_resolve.py --handles 100000 --seconds 4 --before /work/main/src
  --rounds 6`` (load 3.5-4.2): CPU per answer 8.3 / 8.6 µs = 0.965 (medians; lower in 5 of 6
  pairs, equal in one), rates 1.011× (medians 36,524 / 36,128/s: the load's noise); 1M
  handles against the revision before them (75735bd, load 2.3-3.3): CPU 7.2 / 7.4 µs = 0.981
  (lower in 4 of 6 pairs). Against the minimal responder right after (1M, ``--warm-rounds 3``,
  load ~3): rates 0.84× (0.70-1.03), CPU per answer responder ÷ idr 0.87 (7.1 against ~6.15
  µs) — the third quiet window's 0.86× (6.1 / 7.1 µs) has not moved measurably: ~0.1-0.2 µs
  of a warm answer's ~7, where ~0.3-0.5 were wanted;
* still Python per warm answer beyond the responder's, ``timeit`` at load 3-4: the key (three
  slices, two joins) ~136 ns, its lookup in a map of 100,000 ~210 ns (cache misses, as above),
  ``bytes(view[:n])`` ~92 ns, the (answer, address) pair and its append ~32 ns, the tally's
  increment ~27 ns, the call into the protocol ~23 ns. A key taken in one slice (``data[40:]``
  in a map per request head, the head checked by two ``startswith`` with a start): key and
  lookup 366 against 348 ns — the checks (~97 ns) cost what the slices saved; not done.
* a burst's lookups made together (``UdpProtocol.datagrams_received``: the drain reads the
  whole burst, builds its keys, looks them up in one ``map(get, keys)`` — a loop in C whose
  lookups do not depend on each other, so the CPU could overlap their cache misses — then
  builds the answers): rejected. CPU per answer against one datagram at a time, ``--before``,
  6 rounds each: 100,000 handles 1.031× (load ~4); 1M handles 0.937×, 0.992× (load 3-4, a
  full test suite running), 1.027× (load 1.7), and with the roles swapped (one at a time as
  "after") 1.009× the other way: nothing. Its rates looked better at 1M (1.10-1.20×, 14 of 16
  pairs), but with the roles swapped the one-at-a-time server won by the same 1.196× (5 of 6):
  **at 1M handles the second server of each ``--before`` pair gets ~1.1-1.2× the rate of the
  first** (not seen at 100,000), so ``--before`` rate ratios at 1M measure the order; its CPU
  per answer does not move with it, and is what the items above quote.

Cold start (issue 14: from the first second after ``idr serve`` starts on 1M handles, ≥ 0.5×
the warm rate). Choices measured (bench/native_resolve.py, 1M handles, CPU per answer):

* the slow path (decode, core, encode: ~50 µs) — what a node did before: 0.09–0.2× warm;
* **one stored row per miss** (chosen, ``AnswerCache.miss``): the store already keeps each
  handle's values in their wire form (``encode_values``, the ``vals`` column), which *is* the
  body of a resolution answer, so a miss is one key lookup (``Store.get_raw``, on the loop for an
  embedded store; SQLite reads through an mmap of the file), a walk over the permission bytes
  (``all_public``) and a splice under the request shape's head (``Splice``, learned from the slow
  path's first answer of that shape and checked once against it); a missing row is the shape's
  learned HANDLE_NOT_FOUND answer. Nothing extra on disk (0 bytes per handle beyond the row it
  already has); memory grows by one cached answer (~600 bytes with its index) per handle asked;
* **a burst of misses shares one read snapshot** (``Store.raw_reads``): in WAL mode SQLite
  pays three system calls per read transaction (``fcntl`` shared locks on the file and on a
  WAL read mark, taken and dropped, and an ``fstat``), as much CPU as the lookup through the
  mmap itself (7.1 → 3.9 µs per random point read of the 1M-row file, in isolation). The first
  miss of a turn of the loop opens the transaction, the rest of the turn's datagrams share it,
  the loop's next turn ends it — and so does any miss after a commit's invalidation (the cache
  compares its generation), so no answer is read from before an announced commit and a WAL
  checkpoint waits at most one turn. CPU per cold answer 23.9 → 19.7 µs (0.83×, ``--before
  --cold``, both sources alternating in one run, load ~3);
* **the snapshot held across turns** (kept: ``held_reads``, ``READ_HOLD`` = 2 ms): under load
  a turn of the loop is one burst of ~16 datagrams (hdlperf's 16 in flight: 22,864 ``epoll``
  wake-ups for 361,566 answers over a 10 s first start at 1M handles), so a snapshot per turn
  was still a ``BEGIN`` and ``ROLLBACK`` — two ``fcntl``, an ``fstat``, two statements —
  per ~14 reads; now one per 2 ms, and a commit announced meanwhile still ends it before the
  next miss reads (the generation check above), so what an answer may miss is unchanged, and a
  WAL checkpoint waits at most 2 ms. ``fcntl`` calls over the 10 s (``perf stat``): 47,135 →
  9,172 (the log follower's polls are most of what is left). In isolation (one connection,
  random point reads of the 1M-row file, load ~2): 15.9, 8.9, 7.3, 6.3 µs per read in
  snapshots of 1, 4, 16, 64 reads, 6.5 in one snapshot. In the server the gain is within this
  machine's noise: plain ``idr serve`` first starts, this and main alternating (load 3.4–3.7),
  median CPU per answer over s1–s10 15.2 / 15.6, 16.5 / 17.1, 16.2 / 18.6 µs; one
  ``--before --cold`` run at 1M (load ~4) 16.3 / 14.6 µs the other way. Kept for the system
  calls it removes, which matter most under a lighter load, where bursts are smaller;
* **the walk over the permission bytes** (``all_public``) rewritten for the interpreter (one
  ``unpack_from`` per length, no slices): 1.3 against 3.2 µs for the bench's three-value record
  (``timeit``, same process) — cheaper than a flag computed at write time would be worth: that
  needs a column, in both engines, and a migration of every existing store;
* **a spliced answer stored at its handle's second ask**, not its first (``AnswerCache._asked``,
  one byte per hash slot, 4 MiB, forgotten when half its slots are set): storing costs ~2.5 µs
  (the lock, three inserts into maps of a million entries, each missing the CPU caches: 1.7-1.9
  µs for the inserts alone, ``timeit`` at 300,000-1M entries), as much as the row read, and under
  uniform load most first answers of a cold node are its handles' first asks (hdlperf: ~3% of
  the first second's requests repeat one at 1M handles, ~25% by the tenth), as is every name a
  scanner sends; an answer asked again costs one more row read. Measured in one process on the
  1M-handle store (``AnswerCache.miss`` on a fresh cache, 400,000 requests in quarters, main
  against this, twice): 16.0, 12.6, 13.6, 12.3 and 16.2, 15.8, 14.5, 13.2 µs per request
  against 11.8, 11.4, 10.5, 10.6 and 12.0, 11.7, 11.6, 12.4 (with the faster ``all_public`` and
  the next item); the whole cold server (``--before --cold``, 100,000 handles, load ~4): CPU
  per cold answer 0.95×;
* **the store file read ahead** (kept: ``idr.store.readahead``, started by the first
  ``SqliteStore.raw_reads``): on a first start after the file left the page cache (a reboot, a
  copied store, memory pressure) every miss was a major fault through the mmap. The bench's
  1M-handle file (868 MB) with its pages dropped, plain ``idr serve``: 7,663 and 16,874/s in
  s1 (48 and 34 µs CPU per answer), 12,000-29,600/s in s2-s4; with the read-ahead 37,096 and
  29,092/s in s1 (23 and 26 µs), as with the file cached (load ~3; a thread asking); from
  the child process that asks now, 15,930/s at 25.7 µs in s1 (load 4.5). The kernel is asked
  for the whole file in 8 MiB ``POSIX_FADV_WILLNEED`` calls (one call over the whole file
  stops at the device's readahead window: 8 MB came in): 0.25 s of one core, all of it cached
  0.5 s later; ~20 ms when it already was. By a child process (``python -I -S``, ~20 ms to
  start), because closing a descriptor of the file in the node's own process drops SQLite's
  POSIX locks on it; at ``nice`` 10 and off a pinned server's cores, as the warm-up helper
  (its ~0.3 s of CPU is not the loop's to give; the runs below are of this version). Not for a file over
  half of ``MemAvailable``, nor under 32 MiB (its faults cost little). In the bench
  (``native_resolve.py --handles 1000000 --seconds 4 --rounds 2 --cold --cold-seconds 5
  --drop-cache --before SRC``, load 2.3 at its start, main's source as "before"): s2-s5 at
  0.96, 0.67, 0.92, 0.94 and 0.84, 0.99, 1.15, 0.95 × warm against 0.58, 0.47, 0.48, 0.53 and
  0.86, 0.80, 0.80, 0.90; CPU per cold answer 20.9 / 24.8 µs = 0.84×; but s1 not better (0.09
  and 0.29 against 0.14 and 0.34, at 30-38 µs CPU per answer against ~21 after): the first
  second still pays for something besides the page cache that starts of it by hand
  (the same ``idr serve``, the same probe, s1 at 24.9 against 23.7 µs in s2) did not show —
  not found yet (round 1 of each ran from a source tree without bytecode, which explains part
  of its s1, not round 2's). The bench's ``cold`` alone on a copy of the file, main and this
  alternating, twice, each with the file dropped (load 3-4, s1 … s4 in answers/s / µs CPU):
  main 11,450/35.8, 24,930/21.3, 20,212/20.8, 15,161/26.4 and 10,813/38.8, 20,357/24.5,
  20,378/24.5, 18,165/26.4; this 3,359/42.4, 12,977/19.3, 15,763/16.5, 23,389/17.1 and
  21,002/19.4, 28,771/18.3, 23,924/21.7, 25,893/18.9; with the file cached, s1 41,288/19.9
  and s2-s4 42,487-44,011/20.4-20.5 (no s1 penalty). On this machine's disk the read-ahead
  mostly lowers the CPU of the first answers; what it does for the rate of s1 is within the
  noise of a loaded machine — kept for slower disks, where a major fault per miss costs more;
* **the spliced answer built for the request** (kept: ``Splice.answer_to``; ``miss`` gives
  the answer to send): the splice's join with the request's RequestId and ExpirationTime in
  place, instead of a join and then ``patch`` (a ``bytearray`` copy and two slice writes):
  ``timeit`` at load 4-5, 490-504 ns for the join either way, 506-759 ns for the ``patch`` no
  longer done; a miss on a dict reader (no SQLite) 4.2-5.1 against 4.9-5.7 µs (min of 7, three
  alternating runs). Where a cold answer's Python goes (same ``timeit``, per request):
  ``plain_handle`` 0.22, ``_plain_key`` 0.28, the shape key 0.16, ``all_public`` 0.7-1.0,
  the splice 0.5 µs, the row read (``_HeldReads``) 3-4 µs;
* **the values column only** (``Store.raw_reads`` gives the stored values, not the handle: the
  splice uses the request's own spelling): ~0.5 µs a read (5.45 against 6.0, 1M rows);
  one query for a burst's misses (``key IN (…)``) would save ~0.6 µs more a read (4.9 against
  5.45) but needs the burst's misses collected before any is answered: not done. Measured
  again in one process on the 1M-row file (one read transaction, bursts of 16 keys, 64,000
  reads, three runs): 5.51, 4.87, 4.15 µs a point read against 4.14, 3.71, 4.14 µs in one
  ``IN`` query — 0-1.4 µs of a cold answer's ~20, less in the smaller bursts of a lighter
  load, for a second miss path (collected misses answered at the burst's end, the slow path
  for what they cannot settle, the logged and sampled twins) on the UDP path the access log
  shares: built and measured in 2026-12 (next item): not kept;
* **one statement per burst of misses** (built, measured, not kept): the UDP front-end
  collected a burst's misses that need their row (the hot map and memory's answers first, as
  now), held each answer's place among the burst's answers (``send_later`` order kept), read
  the rows at the burst's end in one statement on the held snapshot (its generation checked
  first, as a single read does), spliced each answer, and sent what the rows could not settle
  to the slow path; the logged twin logged them; ``tests/server`` passed, one statement per
  burst seen through SQLite's trace callback, answers byte for byte the slow path's. The
  statement: point reads joined by ``UNION ALL`` beat ``key IN (…)`` (SQLite first builds and
  sorts a temporary index of the IN list): per key, 1M-row file, sorted random keys, one
  snapshot (``timeit``): 16 keys 3.06 µs against IN's 3.33 and a statement each 3.88; 4 keys
  3.47 / 3.93 / 3.92. A served first start's bursts (1M handles, hdlperf, 16 in flight, 3 s):
  6,796 of 7,449 carried 16 such misses, 275 carried 15. The whole miss path in one process
  (bursts of 16, 6,400 misses each way, alternating, two runs): 5.25 against 5.69 and 4.96
  against 5.52 µs a miss — ~0.5 µs saved, ~3% of a served cold answer. Served, that does not
  show: ``native_resolve.py --handles 1000000 --seconds 4 --cold --before`` main, CPU per cold
  answer batched / main 17.4 / 15.1 µs (1.15×, 2 rounds, 1-min load 2.2–2.5), 16.9 / 16.5
  (1.03×, 3 rounds, load 1.2–2.3), 18.4 / 17.1 (1.07×, 4 rounds, load 1.4–2.5); plain
  ``idr serve`` first starts, 3 s of hdlperf from s2, three alternating pairs (load 1.1–1.7):
  13.29 / 13.92, 15.11 / 17.55, 17.45 / 15.83 µs. Not lower than main's, so not kept: the
  saving is under the noise of a served node and the second path's own work (a place held per
  miss, the burst end's second pass over them) takes part of it back. In two of the four
  batched bench starts the CPU per answer rose through s1–s10 (18 → 26, 16 → 23 µs) while
  main's stayed flat — not explained, not seen in the other two nor in the direct pairs;
* **why s5–s10 of the third quiet window were below s2–s4** (0.46–0.48 against 0.50–0.52
  × warm) — what it is not: the collector (a 10 s first start at 1M handles made no
  collection at all while serving: ``/metrics`` showed 161, 14 and 1 collections of the three
  generations when the port first answered and the same at the end; the maps hold only
  ``bytes`` and ``str``, which the collector does not track, so neither are the dicts; ``perf``
  of those 10 s has no collector frame), nor the maps' resizes (``insertdict`` 0.03% of
  samples, no ``dictresize``), nor the Python and SQLite path: in one process, the hot map's
  lookup and then ``miss`` over the same 1M-row store, 70,000 requests per "second" spread as
  hdlperf spreads them, cost 7.4–9.0 µs per request in each of 10 chunks with no trend while
  the map filled to 151,700 answers (two alternating runs each of a snapshot per 16 and per
  150 reads: no difference). Under uniform asks the stores at second asks (~6% of s1's
  requests, ~33% of s10's at 70,000/s) and the hits they make (~0.2% and ~13%) about cancel
  out by s10. So the drift is not in what a cold answer computes; what else the served node
  pays for in s5–s10 is not found (the loaded runs here vary more from second to second than
  the quiet window's drift). Parts of a cold answer (``time.process_time`` over 100,000 requests,
  load ~4): hot key and lookup 0.19, ``plain_handle`` 0.23, ``_plain_key`` 0.30, the shape key
  0.27, the row read 3.8–4.4, ``all_public`` 0.62, ``answer_to`` 0.47, a ``put`` 1.52 µs. The
  row read is the floor: the sqlite3 module's ``execute``/``fetchone`` ~1.0 µs (``SELECT ?``),
  SQLite's search of four pages already in the CPU caches 0.45 µs (one key again and again),
  and ~2.8 µs of cache and TLB misses on four random pages of the 868 MB mapping (the same
  keys sorted: 2.4 µs; ``SELECT 1``, no values column, 3.2 µs); SQLite's serialized-mode
  mutexes are ~3.6% of a served cold answer's samples, not configurable through Python's
  sqlite3. ``key IN (…)`` per burst would share the module's ~1 µs and sort each burst's keys
  (0–1.4 µs measured above) but needs the second miss path: built since, ~0.5 µs a miss in
  one process, not lower served (measured above), not kept. The served node's
  whole profile (``perf``, same start, load ~1.5): libpython 36%, kernel 33% (``sendto`` and
  ``recvfrom``: ~50% of the loop's wall-clock samples, ``py-spy``), SQLite 16%, libc 13%
  (SQLite's key ``memcmp`` 4.7%: every key shares the 13 bytes ``88.100/BENCH-``);
* where a cold answer's time goes now (``perf``, 1M handles, plain ``idr serve``, before the
  shared snapshot and the items above): the kernel ~48% — ``sendmsg`` alone ~33%: on loopback the
  send runs the receiver's stack and wakes it, and a slower server finds the client asleep more
  often, so each answer's wake-up costs more than in the warm run —, SQLite ~12% and libc (its key
  compares, allocation) ~9%, Python ~29% (``miss``, ``Splice``, ``put``), ``fcntl`` ~6%, page
  faults ~2% (0.1 per answer: the kernel maps 16 pages around each fault, so a larger or smaller
  ``mmap_size`` changes nothing: the whole file is mapped). The per-second ratio to warm moves
  with the machine's load far more than the CPU per answer does (0.54–0.78× in the first second
  over two runs of the same code on the shared machine);
* a separate pre-encoded answer column or file: the same bytes stored twice (~230 bytes more per
  handle, a schema change in both engines) for nothing the values column does not already give;
  an mmap'd hash file of answers would save the SQLite lookup (~5 µs) but needs its own
  crash-consistent writer beside the store, and every worker and follower to share it;
* a full warm pass before serving (``--warm``, ``[native] warm``; off by default): a key-ordered
  snapshot of undecoded rows spliced for each shape in use, +600 MB per shape for 1M handles
  (the bench's in-process warm: +607 MiB RSS), ~110 bytes per handle in ``known``. On the loop
  it cost ~5 µs per handle in CPU slices (``WARM_SLICE``, at most ``WARM_DUTY`` of the loop):
  0.04–0.24× warm over the first 10 s on the loaded 2-core machine, 15+ s of wall time per 1M.
  Now the pass runs **in a helper process** (``server/warmhelper.py``): the child opens the same
  store (``Store.reopen_spec``: the SQLite file, or the PostgreSQL DSN, passed on stdin), reads
  one snapshot, splices the answers and ships ``marshal`` chunks (1,000 records a frame through
  a 1 MiB pipe; a 64 KiB pipe made the two processes ping-pong and doubled the pass), at
  ``nice`` 10 and off a pinned server's cores. The loop keeps each chunk as it arrives, on a
  key-ordered shelf per pass (``AnswerCache.shelve``); a miss finds it by ``bisect`` and moves
  the answer into the hot map. Correctness: the pass is opened (``begin_pass``) before the
  child starts, so every commit announced after its snapshot is taken out of each chunk before
  it is shelved (the test that commits during the warm-up fails without it), and one announced
  later takes the handle off every shelf. ``--workers N``: each worker runs its own helper for
  its own cache (one shared helper would read the store once but ship ~370 MB to every
  worker). A promoted mirror keeps its cache (promotion changes neither the records nor the
  homed prefixes: tested), so a mirror that was warm is at full speed when promoted; a
  restarted one loads its answer snapshot like any node (below).
  Measured (1M handles, one shape, cProfile of an idle node): the helper needs ~7.5 s of its
  own core (1.7 s for the keys alone). Merging each chunk into the cache's three maps (the
  first version: ``dict.update``) cost the loop ~3 µs per handle — an insert into a map of a
  million entries misses the CPU caches —; shelving costs ~1.1 µs (``marshal.loads`` 0.55, the
  keys 0.3, the pipe 0.13). ``native_resolve.py``, 1M handles, the warm-up start against plain
  ``idr serve`` in one run, per second × warm over the first 10 s:

  - merged, helper at normal priority (load 3.5–5.9): 0.09, 0.11, 0.06, 0.04, 0.05, 0.06, 0.02,
    0.09, 0.08, 0.02 against 0.17, 0.08, 0.30, 0.30, 0.46, 0.50, 0.55, 0.34, 0.38, 0.38;
  - shelved, ``nice`` 10, the bench's warm server filled on the loop (load 2.0–2.2, the quietest
    run): 0.10, 0.16, 0.17, 0.22, 0.18, 0.20, 0.21, 0.20, 0.24, 0.24 (34–55 µs CPU/answer;
    0.50× after 30 s) against 0.51, 0.76, 0.75, 0.79, 0.80, 0.77, 0.81, 0.83, 0.86, 0.87 (24–27
    µs; 0.75× after 25 s). Two runs between these (shelved at normal priority and at ``nice``
    10, load 3–5) divided by a warm server that had itself been warmed by the helper, so most of
    its "warm" answers came off the shelves: their ratios are too high (the bench now fills its
    warm server on the loop), but the warm-up start was below plain ``idr serve`` in each;
  - the same, the quietest machine of the day (load 1.0–2.5; warm 94,451/s at 8.4 µs, 0.87× the
    minimal responder): 0.06, 0.13, 0.11, 0.12, 0.09, 0.11, 0.11, 0.15, 0.26, 0.31 (29–53 µs)
    against 0.21, 0.22, 0.23, 0.22, 0.24, 0.22, 0.20, 0.21, 0.18, 0.20 (27–35 µs). On a quiet
    machine a plain cold start is ~0.2× warm, not the 0.5–0.8× of loaded runs: load depresses
    the warm rate far more than the cold one, so the ≥ 0.5× goal is not met — a cold answer
    still costs ~3.5× a warm one's CPU.
  - the quiet-window run of 2026-12-02 (nothing else running, load 0.6–1.4; warm 143,000/s and
    138,709/s at 6.9–7.1 µs, 0.84–0.85× the minimal responder), two runs: the warm-up start
    0.08–0.10 in s1 and 0.24–0.41 after, 0.56× and 0.96× once its pass was done; plain
    ``idr serve`` with its default access log 0.35–0.41 (17–20 µs), and configured like the
    warm server (no access log, ``--access-log`` off in the bench) 0.44, 0.45, 0.47, 0.47, 0.47,
    0.48, 0.49, 0.49, 0.52, 0.55 — the access log's ~4.5 µs per answer was part of the gap the
    earlier runs measured (their warm server logged nothing). With ``--workers 2`` on 100,000
    handles the warm-up start was at 0.88× in s4 and 0.95× in s5.

  The helper's ~8 s of CPU has to come from somewhere: the bench pins the server to core 0 and
  the load generator to core 1, so the helper (moved off core 0) slows the load generator, and
  with fewer requests in flight the server pays its wake-ups for fewer answers: twice the CPU
  per answer of a plain cold start, while a miss found on a shelf saves only the row read
  (~5 µs of ~27). So on this machine the warm-up buys nothing in the first 10 s and costs
  ~500 MB more (RSS 1,190 against 699 MiB at the end): it is **not the default**; ``--warm`` /
  ``[native] warm = true`` is for a node whose clients come back to the same handles after a
  restart, on a machine with a core to spare;
* **restarts keep the answers** (chosen, ``server/snapshot.py``, ``[native] snapshot``, on by
  default): a clean stop writes the map (cache key, answer, handle key, side by side; the
  splice heads and HANDLE_NOT_FOUND templates) to ``native-answers.snap`` with the log
  position every commit had reached the map by (the follower's, once the writer stopped and its
  listeners ran), and the next start loads it before its port opens, minus every handle the log
  shows changed since; a gap in the log, another store, a homed change, a changed fingerprint
  (``idr.toml``, ``federation.toml``, role, homed prefixes, server key, site serial and primary
  flag, idr's source) or a damaged file (magic, CRC-32, structure) discards it whole, logged
  once. Choices measured (1M answers, a synthetic cache, load ~4): ``marshal`` of three maps
  loaded in 2.1 s, of three lists 0.4 s plus 1.2 s to build the maps with ``dict(zip(…))``
  (1.9 + 2.0 s at load ~6; the hashing and the new objects are the floor of any format that
  ends in these maps), so lists;
  read through an mmap (no copy of 350 MB); a map kept as an mmap'd sorted file would cost a
  bisect on every first request (the shelves' ~1 µs, plus a copy) and a writer of its own; the
  shelves (``AnswerCache.shelve``) would keep each first request on the miss path. Disk: ~349
  bytes per answer (1M answers: 349 MB); writing it took 4.8–5.4 s at 1M (``marshal``, CRC,
  write, fsync), loading 2.05 s. ``--workers N``: one file per worker index, each process
  loads its own (the kernel's 4-tuple hash sends a client to the same worker index again only
  if the group is rebuilt in the same order; a shared file loaded by every worker would put
  every answer in every process, N× the memory). Never more than ``answer_cache`` answers
  (the oldest are left out). ``native_resolve.py``, 1M handles, load 4.7–5.0 (other suites
  running), in one run against its warm server (15,489/s, 17.8 µs CPU per answer, itself 0.68×
  the minimal responder: a depressed run, so ratios above 1 are noise): plain ``idr serve``
  with no snapshot 0.43, 0.64, 0.65, 0.69, 0.43, 0.37, 0.44, 0.30, 0.47, 0.56 × warm (38–53 µs
  CPU per answer), first answer 2.2 s after spawn; restarted on the snapshot its warm
  predecessor (``--warm``, pass done: 1,000,001 answers) wrote: 0.58, 1.17, 0.68, 0.71, 0.90,
  1.19, 1.19, 0.98, 1.28, 1.22 × warm (33.9 µs in s1, 18.4–22.0 µs after: warm CPU), first
  answer 3.8 s after spawn (load 2.05 s), RSS 970 MiB. So a restarted node is at warm speed
  from its second second, ~4.8 s after its process started. A restart is as warm as what was
  stopped: an earlier run of the bench stopped its ``--warm`` server before the learned
  shape's pass was done (223,005 answers kept) and the restart ran at 0.29, 0.33, 0.27, 0.19,
  0.10, 0.30, 0.47, 0.45, 0.41, 0.39 × warm beside plain ``idr serve``'s 0.31–0.51 (load
  4.7–7.1); the bench now waits for that pass;
* the collector: a full collection walks every entry of every map not frozen (130 ms for 1M
  answers) and Python ran one every few thousand surviving objects, so server processes freeze
  the maps (``gc.freeze``) once built and hold collection off during a pass (``_GcPause``).

Memory per handle: ~600 bytes per cached answer (key ~100, answer ~270, three map entries; the
bench's warmed 1M answers: +606 MiB RSS), none for a handle spliced only once (4 MiB in all
remember first asks), ~110 bytes in ``known``; the cache holds at most
``[native] answer_cache`` answers (2,000,000). The shared snapshot is one more SQLite connection
per process, nothing per handle. Disk per handle (the bench's 1M handles with three values,
SQLite ``dbstat``): row 257 bytes + prefix index 34 + log 228 + reverse-lookup index 388 (the
default ``[search] index = "full"``; 0 with ``"off"``) = ~910 bytes; the answer cache
adds nothing on disk but its snapshot across restarts (~349 bytes per cached answer, written on
a clean stop).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from idr.codec import idtoken
from idr.codec.bodies import ResolutionRequest, ResolutionResponse
from idr.codec.message import Message, decode_message, encode_message
from idr.codec.values import all_public, decode_values
from idr.core.config import WARM_SHAPE_NAMES, NativeLimits
from idr.core.interface import Core, drops_everything
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import Handle, normalize_key
from idr.model.value import HandleValue
from idr.server.accesslog import AccessLog
from idr.server.answers import Answerer
from idr.server.auth import AuthGuard, VerifyLimits
from idr.server.handler import NativeHandler, Outcome
from idr.server.hotcache import MAX_SHAPES, AnswerCache, Splice, cache_key, shape_key
from idr.server.server_key import ServerKey, load_server_key
from idr.server.snapshot import Loaded, fingerprint
from idr.server.snapshot import load as load_snapshot
from idr.server.snapshot import save as save_snapshot
from idr.server.tally import Tallies
from idr.server.tcp import TcpLimits, TcpServerState
from idr.server.throttle import Throttle, ThrottleLimits
from idr.server.udp import Amplification, DrainedSocket, UdpProtocol
from idr.server.warmhelper import helper_fill
from idr.store.base import RawReads, Store, StoreError

log = logging.getLogger("idr.native")

DEFAULT_PORT = 2641
BIND_ATTEMPTS = 20
READ_HOLD = 0.002  # s a read snapshot of the misses is kept at most (unless a commit ends it)

# Envelope + header of a plain resolution request (RequestId, lengths, expiration zero) from the
# clients that matter, warmed for every handle at start: the Handle.Net 9 client (2.3 suggesting
# 2.11, REC|CA|PO, as in ../shared/vectors/handle), a plain RFC 3652 2.1 client (what hdlperf
# and older libraries send) and idr's own client (2.11, PO). Any other shape is cached on first use.
WARM_SHAPES: tuple[bytes, ...] = tuple(
    bytes.fromhex(h)
    for h in (
        "0203020b00000000000000000000000000000000000000010000000019000000ffff00000000000000000000",
        "0201000000000000000000000000000000000000000000010000000019000000ffff00000000000000000000",
        "020b020b00000000000000000000000000000000000000010000000001000000ffff00000000000000000000",
    )
)


@dataclass
class NativeOptions:
    amplification: Amplification = field(default_factory=Amplification)
    idle_timeout: float = 30.0
    max_connections: int = 1024
    max_per_source: int = 64  # TCP connections from one client address
    write_high: int = 64 * 1024  # per TCP connection: answering pauses past this much unsent
    verify: VerifyLimits = field(default_factory=VerifyLimits)
    login: ThrottleLimits = field(default_factory=ThrottleLimits)  # [http] login_*: the back-off
    token_window: float = idtoken.WINDOW
    cache_entries: int = 500_000
    udp_admin: bool = False  # Handle.Net's default site: UDP interface is query-only
    reuse_port: bool = False  # SO_REUSEPORT, for several worker processes on one port
    tcp: bool = True  # False: UDP only (the read-only extra workers of ``idr serve --workers``)
    warm: bool = False  # fill the cache from the store at start (see ``warm``)
    warm_helper: bool = True  # ...in a helper process, off the loop's core (server/warmhelper.py)
    warm_shapes: Sequence[bytes] = ()  # shapes warmed at start (e.g. WARM_SHAPES); others...
    learn_shapes: int = MAX_SHAPES  # ...warmed in the background when first used (0: never)
    follow: float = 0.0  # extra workers: poll the store's log this often (s) (idr.runtime.follow)
    udp_rcvbuf: int | None = None  # SO_RCVBUF for UDP (None: kernel default; see _udp_socket)
    server_key: ServerKey | None = None  # signs certified answers; needed for sessions
    access_log: AccessLog | None = None  # access records of every answer (server/accesslog.py)
    freeze_gc: bool = False  # a server process: keep the collector off the caches (see _GcPause)
    # The answer cache kept across restarts (server/snapshot.py): loaded at start from this
    # file, written by ``NativeServer.save_snapshot`` on a clean stop; None: never.
    snapshot: Path | None = None
    snapshot_tag: str = ""  # the node's configuration (snapshot.config_tag): a change discards it

    @classmethod
    def from_config(cls, limits: NativeLimits, **kwargs: Any) -> NativeOptions:
        """Options with the ``[native]`` limits of a node's idr.toml."""
        amp = Amplification(
            rate=limits.udp_rate, burst=limits.udp_burst, slip=limits.udp_slip, truncate=limits.udp_truncate
        )
        verify = VerifyLimits(
            slots=limits.verify_slots,
            queue=limits.verify_queue,
            cpu_per_source=limits.verify_cpu_per_source,
            cpu_burst=limits.verify_cpu_burst,
        )
        kwargs.setdefault("cache_entries", limits.answer_cache)
        named = tuple(WARM_SHAPES[WARM_SHAPE_NAMES.index(n)] for n in limits.warm_shapes)
        kwargs.setdefault("warm_shapes", named)
        return cls(
            amplification=amp,
            idle_timeout=limits.tcp_idle_timeout,
            max_connections=limits.tcp_max_connections,
            max_per_source=limits.tcp_max_per_source,
            write_high=limits.tcp_write_buffer,
            verify=verify,
            token_window=limits.token_window,
            **kwargs,
        )


class _GcPause:
    """The cyclic garbage collector against a cache of a million entries. A full collection
    walks every entry of every dict and set that is not frozen (~130 ms for 1M answers here),
    and with few container objects alive Python runs one every few thousand survivors: during a
    warm pass, several a second, each stopping the loop. So a server process (``freeze_gc``:
    ``idr serve``, its workers, the benches) freezes what exists once the server is set up and
    after each warm pass (``gc.freeze``: the maps themselves are then never walked again, while
    what they hold is freed by reference counting as usual), and holds collection off while a
    pass builds its sets. Off in library use (tests start many servers in one process)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.passes = 0

    def settle(self) -> None:
        if self.enabled:
            gc.freeze()

    def __enter__(self) -> None:
        if self.enabled:
            self.passes += 1
            gc.disable()

    def __exit__(self, *exc: object) -> None:
        if self.enabled:
            self.passes -= 1
            if self.passes == 0:
                gc.freeze()
                gc.enable()


@dataclass
class NativeServer:
    """What ``start_native`` built; tests and the bench reach the cache and counters here."""

    handler: NativeHandler
    cache: AnswerCache
    udp: UdpProtocol
    tcp: TcpServerState
    address: tuple[str, int]
    tallies: Tallies
    warm_task: asyncio.Task[int] | None = None
    gc: _GcPause = field(default_factory=lambda: _GcPause(False))
    warm_helper: bool = True  # warm passes in a helper process when the store can be reopened
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)  # learned-shape warms, log follower
    snapshot: Path | None = None  # where the cache is kept across restarts (NativeOptions.snapshot)
    loaded: Loaded | None = None  # what the start took from it
    _fingerprint: Callable[[], str] = lambda: ""
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def save_snapshot(self, store: Store, seq: int) -> int:
        """Write the answer cache to ``snapshot`` as of log position ``seq``: every commit up to
        ``seq`` must have reached the cache already (the caller takes it from the log follower
        once the node's writer stopped and its listeners ran). Returns how many answers; a
        failure is logged (the next start is cold), never raised: the node is stopping."""
        if self.snapshot is None:
            return 0
        t0 = time.monotonic()
        try:
            n = save_snapshot(self.cache, self.snapshot, store, seq, self._fingerprint())
        except (OSError, StoreError, ValueError) as e:
            log.warning("answer snapshot not written to %s: %s", self.snapshot, e)
            return 0
        log.info(
            "answer snapshot: %d answers at log position %d in %s (%.2f s)",
            n,
            seq,
            self.snapshot,
            time.monotonic() - t0,
        )
        return n

    async def close(self) -> None:
        for c in reversed(self._closers):
            await c()
        self._closers.clear()


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _tcp_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    s = socket.socket(_family(host), socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    s.bind((host, port))
    s.listen(1024)
    s.setblocking(False)
    return s


def _udp_socket(host: str, port: int, reuse_port: bool, rcvbuf: int | None = None) -> socket.socket:
    s = socket.socket(_family(host), socket.SOCK_DGRAM)
    if reuse_port:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # The default buffer (net.core.rmem_default, 208 KiB) holds only ~200 small datagrams (each
    # costs ~1 KiB of skb overhead): a burst of 100 unpaced datagrams behind one slow-path
    # request overflows it and the kernel drops the rest silently (all the fuzz run's
    # unanswered requests were such drops; 4 MiB removed them). But a 4 MiB buffer cost 20-30%
    # of hot-path throughput in paired bench runs here, so it is opt-in (``udp_rcvbuf``) for
    # sites that see bursts; the kernel caps it at net.core.rmem_max.
    if rcvbuf:
        with contextlib.suppress(OSError):
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    s.bind((host, port))
    s.setblocking(False)
    return s


def _bind_pair(
    host: str, port: int, reuse_port: bool, rcvbuf: int | None = None
) -> tuple[socket.socket, socket.socket]:
    """TCP then UDP on the same port number; with port 0, retry until both are free. Only the
    UDP socket takes ``reuse_port``: extra workers share UDP, TCP stays with worker 0."""
    for _ in range(BIND_ATTEMPTS if port == 0 else 1):
        tcp = _tcp_socket(host, port, False)  # one TCP listener (worker 0): no port sharing
        bound = tcp.getsockname()[1]
        try:
            return tcp, _udp_socket(host, bound, reuse_port, rcvbuf)
        except OSError:
            tcp.close()
            if port != 0:
                raise
    raise OSError(f"no port free for both TCP and UDP on {host} after {BIND_ATTEMPTS} attempts")


def held_reads(store: Store, loop: asyncio.AbstractEventLoop, hold: float = READ_HOLD) -> RawReads:
    """The store's raw reads for the misses (``Store.raw_reads``): a snapshot, once taken, is
    released ``hold`` seconds later, so the misses of many turns of the loop share it (one
    ``BEGIN`` and ``ROLLBACK`` — SQLite's locks and ``fstat``, ~9.5 µs — per ``hold``, not per
    burst); a commit announced meanwhile ends it before the next miss reads
    (``AnswerCache._fresh_reads``), so no answer is older than an announced commit."""
    return store.raw_reads(lambda release: loop.call_later(hold, release))


def native_handler(service: Core, opts: NativeOptions, throttle: Throttle | None = None) -> NativeHandler:
    """The Handle request handler ``opts`` describe, with its own guard (whose gate the caller
    closes: ``handler.guard.gate.close()``); ``throttle``: the node's login back-off, shared
    with its HTTP front-ends (by default one of its own, ``opts.login``'s)."""
    return NativeHandler(
        service,
        udp_admin=opts.udp_admin,
        guard=AuthGuard(opts.verify, throttle=Throttle(opts.login) if throttle is None else throttle),
        token_window=opts.token_window,
        server_key=opts.server_key,
        serve_sessions=opts.tcp,  # sessions live with TCP, in worker 0
    )


async def start_server(
    service: Core,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    options: NativeOptions | None = None,
    tallies: Tallies | None = None,
    *,
    handler: NativeHandler | None = None,
) -> NativeServer:
    """``handler``: one shared with other front-ends (Handle over HTTP), closed by its owner;
    by default the server's own."""
    opts = options or NativeOptions()
    tallies = tallies or Tallies()
    loop = asyncio.get_running_loop()
    cache = AnswerCache(opts.cache_entries)
    cache.responsible = service.is_responsible
    if service.role != "recursive" and not service.store.blocking_reads:
        # Misses answered from one row read on the loop (hotcache.miss). Not on a recursive
        # node: its store holds nothing, and a handle not there is not therefore absent.
        reads = held_reads(service.store, loop)  # the misses of READ_HOLD share a snapshot
        cache.read_raw, cache.read_release = reads.get, reads.release
    service.add_listener(cache.invalidate)
    own_handler = handler is None
    handler = handler or native_handler(service, opts)
    answering = handler

    def answers_print() -> str:
        """What shapes the cached answers besides the records (snapshot.fingerprint)."""
        key = opts.server_key.public_bytes if opts.server_key is not None else b""
        site = answering.answers
        parts = (service.role, service.homed_prefixes(), key, site.serial, site.primary)
        return fingerprint((opts.snapshot_tag, *parts))

    snapshot = opts.snapshot if service.role != "recursive" else None
    loaded = load_snapshot(cache, snapshot, service.store, answers_print()) if snapshot else None
    guard = handler.guard
    if opts.tcp:
        tcp_sock: socket.socket | None
        tcp_sock, udp_sock = _bind_pair(host, port, opts.reuse_port, opts.udp_rcvbuf)
    else:
        tcp_sock, udp_sock = None, _udp_socket(host, port, opts.reuse_port, opts.udp_rcvbuf)
    limits = TcpLimits(
        idle_timeout=opts.idle_timeout,
        max_connections=opts.max_connections,
        max_per_source=opts.max_per_source,
        write_high=opts.write_high,
    )
    state = TcpServerState(handler, cache, limits, tallies["tcp"], opts.access_log)
    try:
        server = await loop.create_server(state.factory, sock=tcp_sock) if tcp_sock is not None else None
        udp = UdpProtocol(handler, cache, opts.amplification, tallies["udp"], opts.access_log)
        udp_transport = DrainedSocket(loop, udp_sock, udp)  # read in bursts (see DrainedSocket)
    except BaseException:
        if tcp_sock is not None:
            tcp_sock.close()
        udp_sock.close()
        raise
    address = (host, udp_sock.getsockname()[1])
    srv = NativeServer(
        handler,
        cache,
        udp,
        state,
        address,
        tallies,
        gc=_GcPause(opts.freeze_gc),
        warm_helper=opts.warm_helper,
        snapshot=snapshot,
        loaded=loaded,
        _fingerprint=answers_print,
    )
    tallies.start_sampler()
    srv.gc.settle()  # the caches' maps exist now: never traversed again, however large they grow

    async def close() -> None:
        await tallies.stop_sampler()
        with contextlib.suppress(ValueError):
            tallies["udp"].samplers.remove(udp.sample_next)
        if srv.warm_task is not None:
            srv.warm_task.cancel()
        for task in list(srv.tasks):
            task.cancel()
        if server is not None:
            server.close()
        for conn in list(state.connections):
            conn._close()
        udp_transport.close()
        for task in list(udp.inflight):
            task.cancel()
        if server is not None:
            await asyncio.wait_for(server.wait_closed(), 5.0)
        if own_handler:
            guard.gate.close()

    srv._closers.append(close)
    if opts.warm:
        srv.warm_task = loop.create_task(warm(srv, service, opts.warm_shapes))
        if opts.learn_shapes > 0:
            cache.max_shapes = opts.learn_shapes
            cache.on_new_shape = lambda shape: _spawn(srv, warm_shape(srv, service, shape))

        def rewarm(keys: Sequence[str]) -> None:
            # Everything was dropped (homed prefixes changed, the store re-copied from a
            # primary): learn again which handles exist, so misses are answered from memory.
            if drops_everything(keys):
                _spawn(srv, warm(srv, service, opts.warm_shapes))

        service.add_listener(rewarm)
    return srv


def _spawn(srv: NativeServer, coro: Awaitable[Any]) -> None:
    task = asyncio.ensure_future(coro)
    srv.tasks.add(task)
    task.add_done_callback(srv.tasks.discard)


async def start_native(
    service: Core,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    options: NativeOptions | None = None,
    tallies: Tallies | None = None,
    *,
    handler: NativeHandler | None = None,
) -> tuple[tuple[str, int], Callable[[], Awaitable[None]]]:
    """The entry point ``idr.node.Node.start`` uses: ((host, port), async close)."""
    srv = await start_server(service, host, port, options, tallies, handler=handler)
    return srv.address, srv.close


# ---------------------------------------------------------------------------- warm-up


def plain_request(shape: bytes, handle: bytes) -> bytes:
    """The plain resolution request of ``shape`` (44 bytes) for ``handle``."""
    n = len(handle)
    out = bytearray(shape[:44])
    out[16:20] = (40 + n).to_bytes(4, "big")  # header 24 + body (4 + n + 4 + 4) + credential length 4
    out[40:44] = (12 + n).to_bytes(4, "big")
    return bytes(out) + n.to_bytes(4, "big") + handle + bytes(12)


class _Shape:
    """Answers for one request shape: the response head is the same for every handle but for the
    two lengths, so each record's stored values are spliced under it (:class:`Splice`) — checked
    byte for byte against the codec's own encoding for the first answers."""

    def __init__(self, shape: bytes, answers: Answerer) -> None:
        self.shape = shape
        self.answers = answers
        self.request: Message = decode_message(plain_request(shape, b"0.NA/x"))
        first = encode_message(
            answers.message(self.request, ResponseCode.SUCCESS, ResolutionResponse("0.NA/x", ()))
        )
        self.answer_head = first[:44]
        self.splice = Splice(self.answer_head, shape)
        self.exact = True  # splicing verified (False: encode every answer in full)
        self.checks = 0

    def full(self, handle: str, values: tuple[HandleValue, ...]) -> bytes:
        req = replace(self.request, body=ResolutionRequest(handle))
        resp = self.answers.message(req, ResponseCode.SUCCESS, ResolutionResponse(handle, values))
        return encode_message(resp)

    def answer(self, handle: str, raw: bytes, values: bytes) -> bytes:
        """The answer for a record whose stored ``values`` are all public (``all_public``)."""
        if not self.exact:
            return self.full(handle, decode_values(values))
        out = self.splice.answer(raw, values)
        if self.checks < 8:  # the splice must equal the codec's own encoding, byte for byte
            self.checks += 1
            full = self.full(handle, decode_values(values))
            if out != full:
                log.warning(
                    "warm-up: spliced answer differs for shape %s; encoding in full", self.shape.hex()[:8]
                )
                self.exact = False
                return full
        return out


def check_warm(
    server: NativeServer, service: Core, handles: Sequence[str], shapes: Sequence[bytes] = WARM_SHAPES
) -> list[str]:
    """Warmed answers that differ from what the slow path gives now (for tests): empty is good."""
    bad = []
    for shape in shapes:
        for h in handles:
            req = plain_request(shape, h.encode())
            cached = server.cache.peek(cache_key(req), normalize_key(h))
            out = server.handler.handle(req, "check", udp=True)
            if cached is not None and (not isinstance(out, Outcome) or out.messages != [cached]):
                bad.append(f"{shape[:4].hex()} {h}")
    return bad


WARM_SLICE = 0.0005  # s of CPU spent warming between chances for the loop to serve
WARM_DUTY = 0.3  # share of the loop a warm pass takes while requests keep arriving


class _Pacer:
    """Shares the event loop between a warm pass and the requests it warms for. The pass works
    in slices of ``WARM_SLICE``; after each the loop serves what arrived, and when requests did
    arrive the pass waits long enough to take no more than ``WARM_DUTY`` of the time. An idle
    node warms at full speed; a busy one keeps most of its loop for answering (from the store,
    ``AnswerCache.miss``, while the pass is not done)."""

    def __init__(self, server: NativeServer) -> None:
        self.udp = server.udp
        self.started = time.thread_time()

    def due(self) -> bool:  # CPU time: on a loaded machine a wall-clock slice is mostly waiting
        return time.thread_time() - self.started >= WARM_SLICE

    async def pause(self) -> None:
        udp = self.udp
        served = udp.hits + udp.slow
        await asyncio.sleep(0)
        if udp.hits + udp.slow != served:
            await asyncio.sleep(WARM_SLICE * (1 - WARM_DUTY) / WARM_DUTY)
        self.started = time.thread_time()


async def warm(
    server: NativeServer, service: Core, shapes: Sequence[bytes] = WARM_SHAPES, batch: int = 2000
) -> int:
    """Learn from one store snapshot every handle the store holds (``known``) and fill the answer
    cache with their answers for ``shapes`` (none is fine: shapes are then learned on first use),
    in batches between which the loop keeps serving; then mark the cache complete. Commits that
    land meanwhile are tracked (``AnswerCache.dirty``) and their handles left to the slow path."""
    cache = server.cache
    cache.start_tracking()
    t0 = time.monotonic()
    helper = server.warm_helper and service.store.reopen_spec() is not None
    with server.gc:  # with a helper, its snapshot pass gives the keys at C speed on the loop
        known = await _known_keys(server, service) if not shapes and not helper else None
    stored = 0
    if known is None:
        known = set()
        with server.gc:
            stored = await _fill(server, service, shapes, known, batch)
    log.debug("warm: %d keys in %.1f s", len(known), time.monotonic() - t0)
    cache.finish_warm(known)
    server.gc.settle()  # the new ``known`` set
    log.info("answer cache warm: %d answers for %d handles (complete=%s)", stored, len(known), cache.complete)
    return stored


async def _known_keys(server: NativeServer, service: Core, page: int = 200) -> set[str] | None:
    """Every handle's key from key-ordered pages of handle names: no record is decoded, so this
    is far cheaper than a snapshot pass (which decodes every value) when no shape is warmed.
    Not one snapshot, but commits meanwhile are ``dirty`` (tracking started first), so ``known``
    plus ``dirty`` covers every handle. A row stored under a key other than its handle's
    normalised key is unreachable by resolution anyway; if paging stops advancing because of
    one, None: the caller takes the snapshot pass."""
    store = service.store
    known: set[str] = set()
    pacer = _Pacer(server)
    for prefix in store.prefixes():
        after: str | None = None
        while True:
            keys = [normalize_key(h) for h in store.list_handles(prefix, after, page)]
            known.update(keys)
            if len(keys) < page:
                break
            if after is not None and keys[-1] <= after:
                return None
            after = keys[-1]
            if pacer.due():
                await pacer.pause()
    return known


async def warm_shape(server: NativeServer, service: Core, shape: bytes, batch: int = 2000) -> int:
    """Answers for one request shape a client just used, for every handle (``on_new_shape``)."""
    with server.gc:
        stored = await _fill(server, service, (shape,), None, batch)
    log.info("answer cache: learned shape %s, %d answers", shape[:4].hex(), stored)
    return stored


async def _fill(
    server: NativeServer, service: Core, shapes: Sequence[bytes], known: set[str] | None, batch: int
) -> int:
    """One pass over a snapshot of undecoded rows (``Store.snapshot_raw``): answers for
    ``shapes`` (each record's stored values spliced under each shape's head), and every key into
    ``known`` when given. Records with a value not everyone may read are left to the slow path."""
    cache = server.cache
    epoch = cache.begin_pass()
    cache.shapes.update(shapes)
    t0 = time.monotonic()
    built = [_Shape(s, server.handler.answers) for s in shapes]
    for b in built:  # misses of this shape are spliced from the store from now on
        cache.heads.setdefault(shape_key(plain_request(b.shape, b"0.NA/x")), b.splice)
    responsible: dict[str, bool] = {}
    items: list[tuple[bytes, bytes, str]] = []
    stored = seen = 0
    rows: Iterator[tuple[str, str, bytes]] | None = None
    try:
        spec = service.store.reopen_spec() if server.warm_helper else None
        if spec is not None:  # the pass off the loop's core (server/warmhelper.py)
            by_helper = await helper_fill(
                cache,
                spec,
                [(b.shape, b.answer_head) for b in built],
                lambda handle: service.is_responsible(Handle.parse(handle)),
                lambda i, handle, values, answer: built[i].full(handle, decode_values(values)) == answer,
                known,
                epoch,
            )
            if by_helper is not None:
                log.debug(
                    "warm pass (helper): %d shapes, %d answers in %.1f s",
                    len(shapes),
                    by_helper,
                    time.monotonic() - t0,
                )
                return by_helper
        _, rows = service.store.snapshot_raw()
        pacer = _Pacer(server)
        for stored_key, handle, values in rows:
            seen += 1
            if seen % 16 == 0 and (pacer.due() or len(items) >= batch):  # keep serving meanwhile
                stored += cache.put_many(items, epoch)
                items.clear()
                await pacer.pause()
            hkey = normalize_key(handle)
            if known is not None:
                known.add(hkey)
                known.add(stored_key)
            if not built:
                continue
            prefix = hkey.partition("/")[0]
            ok = responsible.get(prefix) if prefix != "0.NA" else None
            if ok is None:  # once per prefix (stored handles were validated when written)
                try:
                    ok = service.is_responsible(Handle.parse(handle))
                except HandleError:  # not a handle (internal rows): says nothing about its prefix
                    continue
                if prefix != "0.NA":
                    responsible[prefix] = ok
            if not ok or not all_public(values):
                continue
            raw = handle.encode("utf-8")
            for shape in built:
                items.append((shape.splice.request_key(raw), shape.answer(handle, raw, values), hkey))
        stored += cache.put_many(items, epoch)
    finally:
        close = getattr(rows, "close", None)
        if close is not None:
            close()
        cache.end_pass()
    for b in built:
        if not b.exact:
            cache.heads.pop(shape_key(plain_request(b.shape, b"0.NA/x")), None)
    log.debug("warm pass: %d shapes, %d answers in %.1f s", len(shapes), stored, time.monotonic() - t0)
    return stored


# ---------------------------------------------------------------------------- worker processes

FOLLOW_INTERVAL = 0.005  # s: how stale an extra worker's answers may be after a commit (+ one poll)
WORKER_START_TIMEOUT = 60.0
TALLY_INTERVAL = 1.0  # s: how often an extra worker reports its answer tallies to worker 0
WORKER_STOP_TIMEOUT = 30.0  # a worker writes its answer snapshot as it stops (~7 s for 1M, loaded)


@dataclass
class Workers:
    """The extra worker processes of ``idr serve --workers N`` (worker 0 is the caller)."""

    procs: list[asyncio.subprocess.Process] = field(default_factory=list)
    readers: list[asyncio.Future[None]] = field(default_factory=list)  # their tally reports

    def signal(self, sig: int) -> None:
        """Pass a signal on (SIGHUP: each worker re-reads its logging settings)."""
        for p in self.procs:
            if p.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(sig)

    async def close(self) -> None:
        """SIGTERM each, then SIGKILL whoever is still there after ``WORKER_STOP_TIMEOUT``; each
        worker's last tally (written as it stops) is read before this returns, so every answer
        a worker sent is in worker 0's tallies (the figures a node reports are exact)."""
        for p in self.procs:
            if p.returncode is None:
                p.terminate()
        for p in self.procs:
            try:
                await asyncio.wait_for(p.wait(), WORKER_STOP_TIMEOUT)
            except TimeoutError:
                p.kill()
                await p.wait()
        self.procs.clear()
        if self.readers:  # each ends at its worker's end of output
            await asyncio.wait(self.readers, timeout=WORKER_STOP_TIMEOUT)
        for r in self.readers:
            r.cancel()
        self.readers.clear()


async def start_workers(
    data_dir: str,
    count: int,
    address: tuple[str, int],
    options: NativeOptions | None = None,
    tallies: Tallies | None = None,
) -> Workers:
    """Start ``count`` UDP-only workers on ``address`` (SO_REUSEPORT; the caller's UDP socket must
    have it too) and wait until each has bound its socket. Each opens the node in ``data_dir``
    itself (its own store connection and caches) and follows the store's log. Each reports its
    answer tallies on its stdout every second; they land in ``tallies.workers``."""
    opts = options or NativeOptions()
    args = [
        "--data",
        data_dir,
        "--host",
        address[0],
        "--port",
        str(address[1]),
        "--cache-entries",
        str(opts.cache_entries),
        "--learn-shapes",
        str(opts.learn_shapes),
    ]
    if opts.warm:
        args.append("--warm")
    if opts.udp_rcvbuf:
        args += ["--udp-rcvbuf", str(opts.udp_rcvbuf)]
    for shape in opts.warm_shapes:
        args += ["--shape", shape.hex()]
    workers = Workers()
    try:
        for i in range(1, count + 1):
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                "import sys; from idr.server.native import worker_main; sys.exit(worker_main(sys.argv[1:]))",
                *args,
                "--worker",
                str(i),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                start_new_session=True,
            )  # Ctrl-C reaches worker 0 only; it stops the others
            workers.procs.append(proc)
            assert proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), WORKER_START_TIMEOUT)
            if not line.startswith(b"READY"):
                raise OSError(f"worker {i} did not start (exit code {await proc.wait()})")
            workers.readers.append(asyncio.ensure_future(_read_reports(i, proc.stdout, tallies or Tallies())))
    except BaseException:
        await workers.close()
        raise
    return workers


async def _read_reports(worker: int, stdout: asyncio.StreamReader, tallies: Tallies) -> None:
    """A worker's ``TALLY <json>`` lines (cumulative) → ``tallies.workers[worker]``."""
    import json

    while line := await stdout.readline():
        if line.startswith(b"TALLY "):
            with contextlib.suppress(ValueError):
                tallies.workers[worker] = json.loads(line[6:])


async def _report_tallies(tallies: Tallies) -> None:
    """In a worker process: this worker's cumulative tallies to worker 0, every second."""
    while True:
        await asyncio.sleep(TALLY_INTERVAL)
        _write_tally(tallies)


def _write_tally(tallies: Tallies) -> None:
    import json

    sys.stdout.write("TALLY " + json.dumps(tallies.snapshot(), separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _die_with_parent() -> None:
    """Linux: SIGTERM this process when the process that started it dies, even by SIGKILL, so
    a worker is never orphaned."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def worker_main(argv: Sequence[str]) -> int:
    """Entry point of one extra worker process (see ``start_workers``)."""
    import argparse

    ap = argparse.ArgumentParser(prog="idr-worker")
    ap.add_argument("--data", required=True)
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--worker", type=int, required=True)
    ap.add_argument("--cache-entries", type=int, default=NativeOptions.cache_entries)
    ap.add_argument("--learn-shapes", type=int, default=MAX_SHAPES)
    ap.add_argument("--warm", action="store_true")
    ap.add_argument("--udp-rcvbuf", type=int, default=None)
    ap.add_argument("--shape", action="append", default=[])
    a = ap.parse_args(argv)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before prctl took effect
        return 1
    opts = NativeOptions(
        reuse_port=True,
        tcp=False,
        warm=a.warm,
        cache_entries=a.cache_entries,
        warm_shapes=tuple(bytes.fromhex(h) for h in a.shape),
        learn_shapes=a.learn_shapes,
        follow=FOLLOW_INTERVAL,
        udp_rcvbuf=a.udp_rcvbuf,
        freeze_gc=True,
    )
    import uvloop

    uvloop.run(_worker(Path(a.data), a.host, a.port, a.worker, opts))
    return 0


async def _worker(data: Path, host: str, port: int, worker: int, opts: NativeOptions) -> None:
    import signal

    from idr.core.config import ConfigError, NodeConfig
    from idr.core.service import NodeService
    from idr.node import open_service
    from idr.operations.logs import LogSetup
    from idr.runtime import NodeRuntime

    cfg = NodeConfig.load(data)
    logs = LogSetup(data, worker)  # its own files: two processes must not rotate one file
    logs.apply(cfg.logging)
    if logs.access is not None:
        opts = replace(opts, access_log=logs.access)
        logs.access.start()

    def reload_logging() -> None:
        try:
            logs.apply(NodeConfig.load(data).logging)
        except ConfigError as e:
            log.error("reload refused, settings unchanged: %s", e)

    limits = NativeOptions.from_config(cfg.native_limits)  # the UDP budgets of idr.toml's [native]
    opts = replace(
        opts,
        amplification=limits.amplification,
        verify=limits.verify,
        token_window=limits.token_window,
        login=ThrottleLimits.from_config(cfg.http_limits),  # this process's own login back-off
    )
    service = open_service(cfg)
    # This process's caches follow the store's log (worker 0, and anyone else, write to it).
    runtime = NodeRuntime(service, follow=opts.follow) if isinstance(service, NodeService) else None
    srv: NativeServer | None = None
    try:
        if runtime is not None:
            await runtime.start()
        opts = replace(opts, server_key=load_server_key(data))  # certified UDP answers are signed
        if cfg.native_limits.snapshot and runtime is not None:  # its own file: its own cache
            from idr.server.snapshot import config_tag, snapshot_path

            tag = config_tag(cfg.path, data / "federation.toml")
            opts = replace(opts, snapshot=snapshot_path(data, worker), snapshot_tag=tag)
        srv = await start_server(service, host, port, opts)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        loop.add_signal_handler(signal.SIGHUP, reload_logging)
        sys.stdout.write(f"READY {os.getpid()}\n")
        sys.stdout.flush()
        reporter = loop.create_task(_report_tallies(srv.tallies))
        try:
            await stop.wait()
        finally:
            reporter.cancel()
            await srv.close()
            with contextlib.suppress(OSError):  # worker 0 may be gone
                _write_tally(srv.tallies)  # the last answers too (read by Workers.close)
    finally:
        if runtime is not None:
            await runtime.stop()
            if srv is not None and runtime.follower is not None:  # as Node does for worker 0
                for _ in range(3):
                    await asyncio.sleep(0)
                srv.save_snapshot(service.store, runtime.follower.seq)
        service.close()
        logs.close()
