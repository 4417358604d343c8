---------------------------- MODULE Orchestrator ----------------------------
(***************************************************************************)
(* Tessera's cluster orchestration protocol: the manager (control plane),  *)
(* worker processes (data plane) and clients, as implemented in            *)
(*   orchestrator/src/manager.cc   (ManagerState, Handler::Shutdown)       *)
(*   orchestrator/src/worker.cc    (WorkerState, Handler, RunWorker)       *)
(*   orchestrator/src/client.cc    (Client::Impl::WithShard, Map)          *)
(* over the RPCs of rpc/tessera.thrift.                                    *)
(*                                                                         *)
(* Abstraction (see tla/README.md for the reasoning):                      *)
(*  - A worker *process* is <<node, i>>: node id (stable, kept in the data *)
(*    dir) and its i-th start.  The i is its incarnation: NextIncarnation  *)
(*    makes incarnations strictly increase per data dir (DATA/incarnation, *)
(*    written once the engine's flock is held), so the manager can compare *)
(*    them (Register refuses an older one since 9bd6246).                  *)
(*  - Keys: one per shard.  A write is <<shard, value>>.  A store is the   *)
(*    set of writes applied to a data dir's engine; `synced` the subset    *)
(*    that Db::Sync has made durable.  A SIGKILL keeps the store (page     *)
(*    cache survives), so a restart continues on the same store.          *)
(*  - A client's Write is split into the steps whose interleaving matters:*)
(*    send, CheckShard (accept or refuse), engine write, reply read.  A    *)
(*    worker's Register/Heartbeat is one step (the manager's handling is   *)
(*    atomic under its mutex; until ApplyMap the worker refuses anyway).   *)
(*    The manager's Shutdown call to a worker is: call, worker begins      *)
(*    (shutting_down), drain+Sync+answer, and the manager moves on.        *)
(*  - One manager, as at 9bd6246 (not the Raft-replicated managers).      *)
(*    Manager crashes, network partitions, the heartbeat timeout (`up`),   *)
(*    Get/Scan (they go through the same CheckShard as Write), batches,    *)
(*    deletes, the cluster token and cleanup are not modelled.             *)
(*  - The worker is that of 97e6957 with the code switches TRUE, of        *)
(*    9bd6246 with them FALSE.                                             *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets, TLC

CONSTANTS
    Nodes,           \* node ids of the workers (model values)
    NumShards,       \* shards are 1..NumShards
    Values,          \* values a client may write (model values)
    Clients,         \* client processes (model values)
    ExpectedWorkers, \* --workers: the map forms when this many nodes registered
    MaxFaults,       \* how many crashes (SIGKILL) / zombie starts may happen
    \* Environment switches; all FALSE in the configurations `make tla` runs.
    Zombies,         \* a node's data dir may be copied and a second process of
                     \* the node started while the first still runs (the flock
                     \* on data.tdb prevents this on one data dir)
    LateRegister,    \* a Register sent by a process that then died may be
                     \* handled by the manager after the process is gone
    DrainTimeout,    \* the worker's bounded drain (1000 x 10 ms) may expire
                     \* with a request still in flight
    EarlyShutdown,   \* `tessera shutdown` may come before the cluster formed
    LateRestart,     \* a crashed worker may be restarted after shutdown began
    TellLost,        \* the manager's Shutdown call to a running, registered
                     \* worker may fail before its handler runs (a fault)
    \* Code switches: TRUE is worker.cc since 97e6957, FALSE is worker.cc at
    \* 9bd6246 (whose loop retried forever in each of these cases).
    ExitWhenRefused,     \* a worker whose Register is refused with "cluster is
                         \* shutting down" ends its loop and exits (finding 4)
    ExitWhenManagerGone, \* a worker that saw the map in shutting_down in a
                         \* heartbeat reply and then cannot reach the manager
                         \* (3 s) ends its loop and exits (finding 4)
    ExitAfterFailedDrain, \* a worker whose drain ran out (Shutdown answered
                          \* UNAVAILABLE) ends its loop once its requests in
                          \* flight finish (finding 6)
    LingerBeforeExit     \* a manager whose shutdown began before the cluster
                         \* formed, or that could not tell some worker, keeps
                         \* refusing Register for longer than a worker's
                         \* retry interval before it exits (finding 4)

ASSUME NumShards \in Nat \ {0} /\ ExpectedWorkers \in 1..Cardinality(Nodes)
ASSUME MaxFaults \in Nat
ASSUME {Zombies, LateRegister, DrainTimeout, EarlyShutdown, LateRestart, TellLost,
        ExitWhenRefused, ExitWhenManagerGone, ExitAfterFailedDrain,
        LingerBeforeExit} \subseteq BOOLEAN

Shards   == 1..NumShards
MaxInc   == 1 + MaxFaults                 \* starts per node
Incs     == 1..MaxInc
Procs    == Nodes \X Incs
\* Each fault adds at most one new incarnation and each handled late Register
\* one more (a late Register is handled only if newer than the registered
\* incarnation, so in fact at most one bump per incarnation): a safe bound.
MaxEpoch == 1 + 2 * MaxFaults
Epochs   == 0..MaxEpoch                   \* 0: not owned / not formed
Writes   == Shards \X Values              \* one key per shard
NoNode   == "none"
NoProc   == <<"none", 0>>
NoWrite  == <<0, "none">>

VARIABLES
    \* ---- manager (ManagerState in manager.cc) ----
    mphase,     \* "running" | "shutting_down" (shutting_down_) | "exited"
    formed,     \* formed_
    minc,       \* nodes_[id].incarnation (0: node unknown)
    regOrder,   \* nodes in registration order (Node::order)
    owner,      \* shards_[s].owner
    epoch,      \* shards_[s].epoch
    toTell,     \* Handler::Shutdown: workers still to be told
    telling,    \* the worker the manager's Shutdown call is waiting on
    tellOk,     \* workers that answered Shutdown
    tellFailed, \* workers whose Shutdown call failed ("did not answer")
    \* ---- worker processes (WorkerState in worker.cc) ----
    pst,        \* "unborn" | "running" | "crashed" | "exited"
    reg,        \* registered
    owned,      \* owned_epoch[s] (0: not owned)
    sd,         \* shutting_down: CheckShard refuses everything
    draining,   \* inside Handler::Shutdown (drain, Sync, reply)
    leaving,    \* RunWorker's loop has ended (exit_requested, fenced, or one of
                \* the code switches' exits)
    sawSd,      \* saw_shutdown: a heartbeat reply said shutting_down
    lateReg,    \* Registers of dead processes still queued at the manager
    store,      \* writes in the process's data dir engine
    synced,     \* ... of which Db::Sync made durable
    faults,     \* crashes and zombie starts so far
    \* ---- clients (Client::Impl in client.cc) ----
    cop,        \* the write the client is performing (Put), or NoWrite
    cmap,       \* cached shard map, or NoMap
    refresh,    \* WithShard's `refresh`: fetch the map before the next try
    req,        \* the Write call in flight, or NoReq
    finished,   \* writes this client has completed (acknowledged or failed)
    acked,      \* writes acknowledged to some client
    \* ---- history (checking only) ----
    acceptedBy  \* acceptedBy[s][e]: first process that accepted shard s at epoch e

mgrVars    == <<mphase, formed, minc, regOrder, owner, epoch, toTell, telling, tellOk, tellFailed>>
workerVars == <<pst, reg, owned, sd, draining, leaving, sawSd, lateReg, store, synced, faults>>
clientVars == <<cop, cmap, refresh, req, finished, acked>>
vars       == <<mgrVars, workerVars, clientVars, acceptedBy>>

NodeOf(p) == p[1]
IncOf(p)  == p[2]
NoEpochs  == [s \in Shards |-> 0]

\* The newest process of node n that was ever started.
Latest(n) == CHOOSE i \in Incs : pst[<<n, i>>] # "unborn"
                                /\ \A j \in Incs : j > i => pst[<<n, j>>] = "unborn"
\* The process that answers at the address the manager has for n.  Restarts reuse
\* the node's --listen address (as in `tessera demo`), so that is the newest
\* process; a zombie's copy runs at another address, the one it registered.
AddrProc(n) == IF Zombies THEN <<n, minc[n]>> ELSE <<n, Latest(n)>>
\* The data dir that holds node n's data from the cluster's point of view.
DataDir(n) == AddrProc(n)

Running(p) == pst[p] = "running"
\* Requests inside the worker (the InFlight counter): accepted, not yet answered.
InFlight(p) == \E c \in Clients : req[c].st = "accepted" /\ req[c].proc = p

\* The map as GetShardMap/Register/Heartbeat return it (MapLocked).  Addresses
\* only matter with Zombies (otherwise a node's address never changes).
MapNow == [formed |-> formed, sd |-> mphase = "shutting_down",
           owner |-> owner, epoch |-> epoch,
           addr |-> IF Zombies THEN minc ELSE [n \in Nodes |-> 0]]
NoMap == [formed |-> FALSE, sd |-> FALSE, owner |-> [s \in Shards |-> NoNode],
          epoch |-> NoEpochs, addr |-> [n \in Nodes |-> 0]]
NoReq == [w |-> NoWrite, node |-> NoNode, addr |-> 0, epoch |-> 0, st |-> "none",
          proc |-> NoProc]

TypeOK ==
    /\ mphase \in {"running", "shutting_down", "exited"}
    /\ formed \in BOOLEAN
    /\ minc \in [Nodes -> 0..MaxInc]
    /\ regOrder \in Seq(Nodes) /\ Len(regOrder) <= Cardinality(Nodes)
    /\ owner \in [Shards -> Nodes \cup {NoNode}]
    /\ epoch \in [Shards -> Epochs]
    /\ toTell \subseteq Nodes /\ tellOk \subseteq Nodes /\ tellFailed \subseteq Nodes
    /\ telling \in Nodes \cup {NoNode}
    /\ pst \in [Procs -> {"unborn", "running", "crashed", "exited"}]
    /\ reg \in [Procs -> BOOLEAN] /\ sd \in [Procs -> BOOLEAN]
    /\ draining \in [Procs -> BOOLEAN] /\ leaving \in [Procs -> BOOLEAN]
    /\ sawSd \in [Procs -> BOOLEAN]
    /\ owned \in [Procs -> [Shards -> Epochs]]
    /\ lateReg \subseteq Procs
    /\ store \in [Procs -> SUBSET Writes] /\ synced \in [Procs -> SUBSET Writes]
    /\ faults \in 0..MaxFaults
    /\ cop \in [Clients -> Writes \cup {NoWrite}]
    /\ cmap \in [Clients -> [formed : BOOLEAN, sd : BOOLEAN,
                             owner : [Shards -> Nodes \cup {NoNode}],
                             epoch : [Shards -> Epochs], addr : [Nodes -> 0..MaxInc]]]
    /\ refresh \in [Clients -> BOOLEAN]
    /\ req \in [Clients -> [w : Writes \cup {NoWrite}, node : Nodes \cup {NoNode},
                           addr : 0..MaxInc, epoch : Epochs,
                           st : {"none", "sent", "accepted", "applied", "NOT_OWNER",
                                 "STALE_EPOCH", "UNAVAILABLE"},
                           proc : Procs \cup {NoProc}]]
    /\ finished \in [Clients -> SUBSET Writes]
    /\ acked \subseteq Writes
    /\ acceptedBy \in [Shards -> [1..MaxEpoch -> Procs \cup {NoProc}]]

Init ==
    /\ mphase = "running" /\ formed = FALSE /\ minc = [n \in Nodes |-> 0]
    /\ regOrder = << >> /\ owner = [s \in Shards |-> NoNode] /\ epoch = NoEpochs
    /\ toTell = {} /\ telling = NoNode /\ tellOk = {} /\ tellFailed = {}
    \* every node's first process is up (RunWorker: engine open, server listening)
    /\ pst = [p \in Procs |-> IF IncOf(p) = 1 THEN "running" ELSE "unborn"]
    /\ reg = [p \in Procs |-> FALSE] /\ owned = [p \in Procs |-> NoEpochs]
    /\ sd = [p \in Procs |-> FALSE] /\ draining = [p \in Procs |-> FALSE]
    /\ leaving = [p \in Procs |-> FALSE] /\ sawSd = [p \in Procs |-> FALSE]
    /\ lateReg = {}
    /\ store = [p \in Procs |-> {}] /\ synced = [p \in Procs |-> {}]
    /\ faults = 0
    /\ cop = [c \in Clients |-> NoWrite] /\ cmap = [c \in Clients |-> NoMap]
    /\ refresh = [c \in Clients |-> FALSE] /\ req = [c \in Clients |-> NoReq]
    /\ finished = [c \in Clients |-> {}] /\ acked = {}
    /\ acceptedBy = [s \in Shards |-> [e \in 1..MaxEpoch |-> NoProc]]

(***************************************************************************)
(* Manager: registration and heartbeats (ManagerState::Register/Heartbeat) *)
(***************************************************************************)

\* ManagerState::Register(id, address, incarnation) for process <<n, i>> while not
\* shutting down, with an incarnation not below the registered one (callers
\* check that): the same incarnation changes nothing; a known node with a newer
\* incarnation keeps its shards and bumps their epochs; a new node is appended to
\* the order, and the map forms round-robin (Form(), epoch 1) once ExpectedWorkers
\* nodes are known.  Sets the manager variables and returns the caller's view of
\* the new map (what ApplyMap extracts from RegisterReply.shard_map).
RegisterAt(n, i, Reply(_)) ==
    LET known    == minc[n] # 0
        newOrder == IF known THEN regOrder ELSE Append(regOrder, n)
        forms    == ~formed /\ ~known /\ Len(newOrder) >= ExpectedWorkers
        newOwner == IF forms THEN [s \in Shards |-> newOrder[((s - 1) % Len(newOrder)) + 1]]
                    ELSE owner
        newEpoch == IF forms THEN [s \in Shards |-> 1]
                    ELSE IF known /\ minc[n] # i
                         THEN [s \in Shards |-> IF owner[s] = n THEN epoch[s] + 1 ELSE epoch[s]]
                         ELSE epoch
    IN /\ minc' = [minc EXCEPT ![n] = i]
       /\ regOrder' = newOrder
       /\ formed' = (formed \/ forms)
       /\ owner' = newOwner
       /\ epoch' = newEpoch
       /\ Reply([s \in Shards |-> IF newOwner[s] = n THEN newEpoch[s] ELSE 0])

\* A running, unregistered worker calls Register (RunWorker's loop, !registered),
\* the manager handles it and the worker applies the reply (ApplyMap, then
\* `registered`).  (The call is one step: between the manager's handling and
\* ApplyMap the worker is still unregistered and refuses everything, which only
\* delays clients.)  An incarnation below the registered one is refused with
\* STALE_EPOCH (9bd6246, finding 1): the worker is fenced (its loop breaks,
\* shutting_down is set, it exits).  On one data dir that cannot happen to a
\* live process (a newer one needs the flock); with Zombies it can.
MgrRegister(p) ==
    /\ Running(p) /\ ~reg[p] /\ ~leaving[p]
    /\ mphase = "running"
    /\ IF IncOf(p) < minc[NodeOf(p)]
         THEN /\ sd' = [sd EXCEPT ![p] = TRUE]
              /\ leaving' = [leaving EXCEPT ![p] = TRUE]
              /\ UNCHANGED <<minc, regOrder, formed, owner, epoch, owned, reg>>
         ELSE /\ RegisterAt(NodeOf(p), IncOf(p),
                            LAMBDA m : /\ owned' = [owned EXCEPT ![p] = m]
                                       /\ reg' = [reg EXCEPT ![p] = TRUE])
              /\ UNCHANGED <<sd, leaving>>
    /\ UNCHANGED <<mphase, toTell, telling, tellOk, tellFailed, pst,
                   draining, sawSd, lateReg, store, synced, faults, clientVars, acceptedBy>>

\* While shutting down the manager refuses Register with UNAVAILABLE "cluster is
\* shutting down".  worker.cc at 9bd6246 treated that like any other error: back
\* off and retry, forever (once the manager has exited, the connection fails,
\* also forever); no state changes, so without ExitWhenRefused this is a
\* stuttering step and is not written out.  [ExitWhenRefused] Since 97e6957
\* (finding 4) the loop breaks on that refusal and RunWorker flushes and exits
\* (WorkerExit).
MgrRegisterRefused(p) ==
    /\ ExitWhenRefused
    /\ Running(p) /\ ~reg[p] /\ ~leaving[p]
    /\ mphase = "shutting_down"
    /\ leaving' = [leaving EXCEPT ![p] = TRUE]
    /\ UNCHANGED <<mgrVars, pst, reg, owned, sd, draining, sawSd, lateReg, store, synced,
                   faults, clientVars, acceptedBy>>

\* [LateRegister] A Register that a process sent just before it was SIGKILLed is
\* still in the manager's socket buffer and is handled now, after a newer process
\* of the node may have registered.  Since 9bd6246 the manager refuses it with
\* STALE_EPOCH when its incarnation is below the registered one; the same one
\* changes nothing; a newer one (the node had not registered this or a later
\* process yet) is taken as a registration.  While shutting down it is refused.
\* The reply is lost.
MgrLateRegister(p) ==
    /\ p \in lateReg
    /\ mphase # "exited"
    /\ lateReg' = lateReg \ {p}
    /\ IF mphase = "shutting_down" \/ IncOf(p) < minc[NodeOf(p)]
         THEN UNCHANGED <<minc, regOrder, formed, owner, epoch>>
         ELSE RegisterAt(NodeOf(p), IncOf(p), LAMBDA m : TRUE)
    /\ UNCHANGED <<mphase, toTell, telling, tellOk, tellFailed, pst, reg, owned, sd,
                   draining, leaving, sawSd, store, synced, faults, clientVars, acceptedBy>>

\* A registered worker calls Heartbeat(node id, incarnation) every heartbeat_ms.
\* ManagerState::Heartbeat refuses an incarnation that is not the node's current
\* one with STALE_EPOCH: the worker is fenced (its loop breaks, shutting_down is
\* set, it exits).  Otherwise the worker applies the returned map (ApplyMap),
\* and notes (saw_shutdown, since 97e6957) when its state is shutting_down.
\* Heartbeats go on after the manager entered shutting_down.
MgrHeartbeat(p) ==
    /\ Running(p) /\ reg[p] /\ ~leaving[p]
    /\ mphase # "exited"
    /\ IF minc[NodeOf(p)] # IncOf(p)
         THEN /\ sd' = [sd EXCEPT ![p] = TRUE]
              /\ leaving' = [leaving EXCEPT ![p] = TRUE]
              /\ UNCHANGED <<owned, sawSd>>
         ELSE /\ owned' = [owned EXCEPT ![p] =
                             [s \in Shards |-> IF owner[s] = NodeOf(p) THEN epoch[s] ELSE 0]]
              /\ sawSd' = [sawSd EXCEPT ![p] = @ \/ mphase = "shutting_down"]
              /\ UNCHANGED <<sd, leaving>>
    /\ UNCHANGED <<mgrVars, pst, reg, draining, lateReg, store, synced, faults, clientVars,
                   acceptedBy>>

(***************************************************************************)
(* Worker processes: crash and restart                                     *)
(***************************************************************************)

\* SIGKILL of a running process.  Its engine data survives (page cache).  Calls
\* in flight to it fail (the client sees a transport error: UNAVAILABLE), even
\* an applied write whose reply was not yet read.  A Shutdown call from the
\* manager that it was handling fails too.  With LateRegister, a Register it sent
\* may still be handled later.
Crash(p) ==
    /\ Running(p) /\ faults < MaxFaults
    /\ faults' = faults + 1
    /\ pst' = [pst EXCEPT ![p] = "crashed"]
    /\ reg' = [reg EXCEPT ![p] = FALSE]
    /\ owned' = [owned EXCEPT ![p] = NoEpochs]
    /\ sd' = [sd EXCEPT ![p] = FALSE]
    /\ draining' = [draining EXCEPT ![p] = FALSE]
    /\ leaving' = [leaving EXCEPT ![p] = FALSE]
    /\ sawSd' = [sawSd EXCEPT ![p] = FALSE]
    /\ \/ lateReg' = lateReg
       \/ /\ LateRegister /\ ~reg[p] /\ mphase = "running"
          /\ lateReg' = lateReg \cup {p}
    /\ req' = [c \in Clients |->
                 IF req[c].proc = p /\ req[c].st \in {"accepted", "applied"}
                   THEN [req[c] EXCEPT !.st = "UNAVAILABLE"] ELSE req[c]]
    /\ IF draining[p] /\ telling = NodeOf(p)
         THEN /\ telling' = NoNode
              /\ tellFailed' = tellFailed \cup {NodeOf(p)}
         ELSE UNCHANGED <<telling, tellFailed>>
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, toTell, tellOk, store, synced,
                   cop, cmap, refresh, finished, acked, acceptedBy>>

\* `tessera worker` started again on the node's data dir after a crash: a new
\* incarnation, above every earlier one of that data dir, on the same node id
\* and store.  [Zombies] The data dir was copied and a second process of the
\* node started while the old one still runs.  Its incarnation is
\* max(copied value + 1, clock in ms): above the old process's when the copy was
\* taken after that one started or the clock moved on; the model assumes so
\* (otherwise the new process's Register is refused and it is fenced).
\* Restarts after shutdown began only with LateRestart, only while the manager
\* still runs, and only of a node that has not acknowledged its Shutdown.  A
\* process started after the manager exited waits for a manager, as one started
\* before any manager does; so does a node that acknowledged its Shutdown, then
\* crashed and was started again: nothing tells the manager to wait for it, and
\* its first Register may come after the manager exited.  Both are new starts
\* by design, not processes left over from the shutdown (tla/README.md).
Start(n) ==
    LET i == Latest(n)
        old == <<n, i>>
        new == <<n, i + 1>>
    IN /\ i < MaxInc
       /\ \/ pst[old] = "crashed"
          \/ Zombies /\ Running(old) /\ faults < MaxFaults
       /\ mphase = "running" \/ (LateRestart /\ mphase = "shutting_down" /\ n \notin tellOk)
       /\ faults' = IF pst[old] = "crashed" THEN faults ELSE faults + 1
       /\ pst' = [pst EXCEPT ![new] = "running"]
       /\ store' = [store EXCEPT ![new] = store[old]]
       /\ synced' = [synced EXCEPT ![new] = synced[old]]
       /\ UNCHANGED <<mgrVars, reg, owned, sd, draining, leaving, sawSd, lateReg,
                      clientVars, acceptedBy>>

(***************************************************************************)
(* Clients: Client::Put through WithShard                                  *)
(***************************************************************************)

\* The client begins a Put of a write it has not done yet.
ClientStart(c, w) ==
    /\ cop[c] = NoWrite /\ w \notin finished[c]
    /\ cop' = [cop EXCEPT ![c] = w]
    /\ UNCHANGED <<mgrVars, workerVars, cmap, refresh, req, finished, acked, acceptedBy>>

\* Map(refresh): GetShardMap from the manager when there is no cached map or the
\* last try asked for a refresh.
ClientRefresh(c) ==
    /\ cop[c] # NoWrite /\ req[c] = NoReq
    /\ cmap[c] = NoMap \/ refresh[c]
    /\ mphase # "exited"
    /\ cmap' = [cmap EXCEPT ![c] = MapNow]
    /\ refresh' = [refresh EXCEPT ![c] = FALSE]
    /\ UNCHANGED <<mgrVars, workerVars, cop, req, finished, acked, acceptedBy>>

\* The operation ends without an acknowledgement: the manager is gone (GetShardMap
\* fails until the deadline), or the cached map says "shutting_down" (WithShard
\* returns "cluster is shutting down" at once).
ClientFail(c) ==
    /\ cop[c] # NoWrite /\ req[c] = NoReq
    /\ \/ (cmap[c] = NoMap \/ refresh[c]) /\ mphase = "exited"
       \/ cmap[c] # NoMap /\ ~refresh[c] /\ cmap[c].formed /\ cmap[c].sd
    /\ finished' = [finished EXCEPT ![c] = @ \cup {cop[c]}]
    /\ cop' = [cop EXCEPT ![c] = NoWrite]
    /\ UNCHANGED <<mgrVars, workerVars, cmap, refresh, req, acked, acceptedBy>>

\* One try of WithShard with the cached map: not formed -> back off and refresh;
\* otherwise send Write(shard, epoch from the map) to the shard owner's address.
ClientSend(c) ==
    /\ cop[c] # NoWrite /\ req[c] = NoReq /\ cmap[c] # NoMap /\ ~refresh[c]
    /\ ~(cmap[c].formed /\ cmap[c].sd)
    /\ LET s == cop[c][1]
           m == cmap[c]
       IN IF ~m.formed
            THEN /\ refresh' = [refresh EXCEPT ![c] = TRUE]
                 /\ UNCHANGED req
            ELSE /\ req' = [req EXCEPT ![c] = [w |-> cop[c], node |-> m.owner[s],
                                                addr |-> m.addr[m.owner[s]],
                                                epoch |-> m.epoch[s], st |-> "sent",
                                                proc |-> NoProc]]
                 /\ UNCHANGED refresh
    /\ UNCHANGED <<mgrVars, workerVars, cop, cmap, finished, acked, acceptedBy>>

\* The process that receives a call sent to node n at address a.
Target(n, a) == IF Zombies THEN <<n, a>> ELSE <<n, Latest(n)>>

\* The worker's Handler::Write: InFlight counts it, then CheckShard: shutting
\* down -> UNAVAILABLE; not registered -> UNAVAILABLE; not owned -> NOT_OWNER;
\* epoch below ours -> STALE_EPOCH; above -> UNAVAILABLE; equal -> accepted.  No
\* process listening -> the connection fails (UNAVAILABLE).  In the code the
\* increment of in_flight precedes the load of shutting_down and Shutdown stores
\* shutting_down before loading in_flight (seq_cst atomics), so either the
\* request is refused or Shutdown's drain waits for it: one atomic step here.
WorkerRecv(c) ==
    /\ req[c].st = "sent"
    /\ LET p == Target(req[c].node, req[c].addr)
           s == req[c].w[1]
           e == req[c].epoch
           mine == owned[p][s]
           st == CASE ~Running(p)  -> "UNAVAILABLE"
                   [] sd[p]        -> "UNAVAILABLE"
                   [] ~reg[p]      -> "UNAVAILABLE"
                   [] mine = 0     -> "NOT_OWNER"
                   [] e < mine     -> "STALE_EPOCH"
                   [] e > mine     -> "UNAVAILABLE"
                   [] OTHER        -> "accepted"
       IN /\ req' = [req EXCEPT ![c].st = st, ![c].proc = IF st = "accepted" THEN p ELSE NoProc]
          /\ acceptedBy' = IF st = "accepted" /\ acceptedBy[s][e] = NoProc
                             THEN [acceptedBy EXCEPT ![s][e] = p] ELSE acceptedBy
    /\ UNCHANGED <<mgrVars, workerVars, cop, cmap, refresh, finished, acked>>

\* db->Write: the accepted write reaches the engine; the handler returns (the
\* InFlight counter drops) and the reply is on its way.
WorkerApply(c) ==
    /\ req[c].st = "accepted" /\ Running(req[c].proc)
    /\ store' = [store EXCEPT ![req[c].proc] = @ \cup {req[c].w}]
    /\ req' = [req EXCEPT ![c].st = "applied"]
    /\ UNCHANGED <<mgrVars, pst, reg, owned, sd, draining, leaving, sawSd, lateReg, synced,
                   faults, cop, cmap, refresh, finished, acked, acceptedBy>>

\* The client reads the reply.  OK: acknowledged.  NOT_OWNER/STALE_EPOCH: refresh
\* the map and retry at once.  UNAVAILABLE: back off, refresh and retry, or give
\* up at the deadline.
ClientRecv(c) ==
    /\ req[c].st \in {"applied", "NOT_OWNER", "STALE_EPOCH", "UNAVAILABLE"}
    /\ req' = [req EXCEPT ![c] = NoReq]
    /\ IF req[c].st = "applied"
         THEN /\ acked' = acked \cup {req[c].w}
              /\ finished' = [finished EXCEPT ![c] = @ \cup {cop[c]}]
              /\ cop' = [cop EXCEPT ![c] = NoWrite]
              /\ UNCHANGED refresh
         ELSE /\ UNCHANGED acked
              /\ \/ /\ refresh' = [refresh EXCEPT ![c] = TRUE]
                    /\ UNCHANGED <<finished, cop>>
                 \/ /\ req[c].st = "UNAVAILABLE"                 \* deadline passed
                    /\ finished' = [finished EXCEPT ![c] = @ \cup {cop[c]}]
                    /\ cop' = [cop EXCEPT ![c] = NoWrite]
                    /\ UNCHANGED refresh
    /\ UNCHANGED <<mgrVars, workerVars, cmap, acceptedBy>>

(***************************************************************************)
(* Shutdown: client -> manager -> each worker -> manager exits             *)
(***************************************************************************)

\* `tessera shutdown`: Handler::Shutdown -> BeginShutdown: shutting_down_ is set
\* (Register refuses, maps say "shutting_down") and the known nodes are the
\* workers to tell.  Issued when work is complete, so after the cluster formed
\* (with EarlyShutdown: at any time).
ClientShutdown ==
    /\ mphase = "running"
    /\ formed \/ EarlyShutdown
    /\ mphase' = "shutting_down"
    /\ toTell' = {n \in Nodes : minc[n] # 0}
    /\ UNCHANGED <<formed, minc, regOrder, owner, epoch, telling, tellOk, tellFailed,
                   workerVars, clientVars, acceptedBy>>

\* The manager calls WorkerService.Shutdown on the next worker (one at a time,
\* waiting for the answer).
MgrTell(n) ==
    /\ mphase = "shutting_down" /\ telling = NoNode /\ n \in toTell
    /\ toTell' = toTell \ {n}
    /\ telling' = n
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, tellOk, tellFailed,
                   workerVars, clientVars, acceptedBy>>

\* The call fails: nobody is listening at the worker's address.
MgrTellFail ==
    /\ mphase = "shutting_down" /\ telling # NoNode
    /\ ~Running(AddrProc(telling))
    /\ telling' = NoNode
    /\ tellFailed' = tellFailed \cup {telling}
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, toTell, tellOk,
                   workerVars, clientVars, acceptedBy>>

\* The worker's Handler::Shutdown begins: shutting_down is stored, so CheckShard
\* refuses every later request; it then drains.
WorkerOnShutdown(p) ==
    /\ mphase = "shutting_down" /\ telling = NodeOf(p) /\ p = AddrProc(telling)
    /\ Running(p) /\ ~draining[p]
    /\ sd' = [sd EXCEPT ![p] = TRUE]
    /\ draining' = [draining EXCEPT ![p] = TRUE]
    /\ UNCHANGED <<mgrVars, pst, reg, owned, leaving, sawSd, lateReg, store, synced, faults,
                   clientVars, acceptedBy>>

\* The drain ends with in_flight == 0: db->Sync flushes the engine,
\* exit_requested is set and the OK reply reaches the manager.
WorkerDrainDone(p) ==
    /\ draining[p] /\ Running(p) /\ telling = NodeOf(p)
    /\ ~InFlight(p)
    /\ synced' = [synced EXCEPT ![p] = store[p]]
    /\ draining' = [draining EXCEPT ![p] = FALSE]
    /\ leaving' = [leaving EXCEPT ![p] = TRUE]
    /\ telling' = NoNode
    /\ tellOk' = tellOk \cup {NodeOf(p)}
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, toTell, tellFailed,
                   pst, reg, owned, sd, sawSd, lateReg, store, faults, clientVars, acceptedBy>>

\* [DrainTimeout] The drain (1000 x 10 ms) expires with a request still in
\* flight.  Since 9bd6246 (finding 3) Handler::Shutdown then throws UNAVAILABLE
\* without syncing and without setting exit_requested: the manager counts the
\* worker as failed and moves on.  The worker keeps shutting_down set (it
\* refuses every request).  At 9bd6246 its loop went on: heartbeats while the
\* manager still ran, then failed connections, forever (finding 6).
\* [ExitAfterFailedDrain] Since 97e6957 Shutdown sets drain_failed before
\* throwing, and the loop ends once in_flight is 0; RunWorker then flushes and
\* exits.  Here the loop's end is `leaving` at once and WorkerExit waits for
\* the requests in flight: the heartbeats the code still sends until then only
\* update a map that a worker refusing everything does not use (or fence it,
\* which sets nothing new).
WorkerDrainExpired(p) ==
    /\ DrainTimeout
    /\ draining[p] /\ Running(p) /\ telling = NodeOf(p)
    /\ InFlight(p)
    /\ draining' = [draining EXCEPT ![p] = FALSE]
    /\ leaving' = IF ExitAfterFailedDrain THEN [leaving EXCEPT ![p] = TRUE] ELSE leaving
    /\ telling' = NoNode
    /\ tellFailed' = tellFailed \cup {NodeOf(p)}
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, toTell, tellOk,
                   pst, reg, owned, sd, sawSd, lateReg, store, synced, faults,
                   clientVars, acceptedBy>>

\* [TellLost] The manager's Shutdown call to a running, registered worker fails
\* before the worker's handler runs (connect or I/O timeout, reset); it counts
\* as a fault.  The manager reports the worker as failed and moves on.  Timing:
\* the call fails after its timeout (1 s to connect, 30 s for I/O), longer than
\* the 300 ms heartbeat interval, so the worker has heartbeated meanwhile and
\* seen shutting_down: the step is enabled only once it has (sawSd).  (A lost
\* call to an unregistered worker, which would depend on the timing of its
\* Register retries instead, is not modelled.)
MgrTellLost ==
    /\ TellLost /\ faults < MaxFaults
    /\ mphase = "shutting_down" /\ telling # NoNode
    /\ LET p == AddrProc(telling)
       IN Running(p) /\ reg[p] /\ ~draining[p] /\ sawSd[p]
    /\ faults' = faults + 1
    /\ telling' = NoNode
    /\ tellFailed' = tellFailed \cup {telling}
    /\ UNCHANGED <<mphase, formed, minc, regOrder, owner, epoch, toTell, tellOk,
                   pst, reg, owned, sd, draining, leaving, sawSd, lateReg, store, synced,
                   clientVars, acceptedBy>>

\* [ExitWhenManagerGone] Since 97e6957 (finding 4): a worker that saw the map in
\* shutting_down in a heartbeat reply and whose calls to the manager have failed
\* (UNAVAILABLE) for 3 s since its last successful one leaves its loop; RunWorker
\* sets shutting_down, flushes and exits.  The 3 s are abstracted: the manager
\* has exited (the model has no partitions, so while it runs the worker's calls
\* reach it).
WorkerManagerGone(p) ==
    /\ ExitWhenManagerGone
    /\ Running(p) /\ sawSd[p] /\ ~leaving[p]
    /\ mphase = "exited"
    /\ sd' = [sd EXCEPT ![p] = TRUE]
    /\ leaving' = [leaving EXCEPT ![p] = TRUE]
    /\ UNCHANGED <<mgrVars, pst, reg, owned, draining, sawSd, lateReg, store, synced, faults,
                   clientVars, acceptedBy>>

\* RunWorker after its loop (exit requested, fenced, or one of the exits of
\* 97e6957): shutting_down is set, server->Stop() waits for the handlers still
\* running, db->Sync(), exit.
WorkerExit(p) ==
    /\ Running(p) /\ leaving[p] /\ ~draining[p] /\ ~InFlight(p)
    /\ pst' = [pst EXCEPT ![p] = "exited"]
    /\ synced' = [synced EXCEPT ![p] = store[p]]
    /\ reg' = [reg EXCEPT ![p] = FALSE]
    /\ owned' = [owned EXCEPT ![p] = NoEpochs]
    /\ sd' = [sd EXCEPT ![p] = FALSE]
    /\ leaving' = [leaving EXCEPT ![p] = FALSE]
    /\ sawSd' = [sawSd EXCEPT ![p] = FALSE]
    /\ UNCHANGED <<mgrVars, draining, lateReg, store, faults, clientVars, acceptedBy>>

\* Every worker was told (answered or failed): done_ is set and RunManager exits.
\* [LingerBeforeExit] When the shutdown began before the cluster formed, or some
\* worker could not be told, a worker process may still be retrying Register
\* (one that was SIGKILLed and restarted, or one that never registered).  The
\* manager then keeps refusing Register for 3.5 s, longer than a worker's
\* retry interval (backoff up to 1 s plus a 2 s call budget), before it
\* commits the end of the shutdown.  Untimed, that is: it exits only once every
\* running process that has not registered was refused.  A process started
\* after the manager exited waits for a manager, as one started before it does.
MgrExit ==
    /\ mphase = "shutting_down" /\ toTell = {} /\ telling = NoNode
    /\ LingerBeforeExit /\ (tellFailed # {} \/ ~formed)
       => \A p \in Procs : Running(p) /\ ~reg[p] => leaving[p]
    /\ mphase' = "exited"
    /\ UNCHANGED <<formed, minc, regOrder, owner, epoch, toTell, telling, tellOk, tellFailed,
                   workerVars, clientVars, acceptedBy>>

Next ==
    \/ \E p \in Procs : \/ MgrRegister(p) \/ MgrRegisterRefused(p) \/ MgrLateRegister(p)
                        \/ MgrHeartbeat(p) \/ Crash(p)
                        \/ WorkerOnShutdown(p) \/ WorkerDrainDone(p)
                        \/ WorkerDrainExpired(p) \/ WorkerManagerGone(p) \/ WorkerExit(p)
    \/ \E n \in Nodes : Start(n) \/ MgrTell(n)
    \/ \E c \in Clients : \/ \E w \in Writes : ClientStart(c, w)
                          \/ ClientRefresh(c) \/ ClientFail(c) \/ ClientSend(c)
                          \/ WorkerRecv(c) \/ WorkerApply(c) \/ ClientRecv(c)
    \/ ClientShutdown \/ MgrTellFail \/ MgrTellLost \/ MgrExit

Spec == Init /\ [][Next]_vars

\* Shutdown needs the manager and the workers to keep taking their steps, and
\* accepted writes to finish (the drain waits for them).  A worker refused
\* during shutdown keeps retrying, so [ExitWhenRefused] the refusal is fair too,
\* and so is [ExitWhenManagerGone] the exit of a worker that keeps failing to
\* reach a manager it saw shutting down.  Crashes, lost Shutdown calls,
\* restarts, client requests, registration and heartbeats need no fairness.
Fairness ==
    /\ WF_vars(\E n \in Nodes : MgrTell(n))
    /\ WF_vars(MgrTellFail)
    /\ WF_vars(MgrExit)
    /\ \A p \in Procs : /\ WF_vars(WorkerOnShutdown(p))
                        /\ WF_vars(WorkerDrainDone(p))
                        /\ WF_vars(WorkerDrainExpired(p))
                        /\ WF_vars(WorkerExit(p))
                        /\ WF_vars(MgrRegisterRefused(p))
                        /\ WF_vars(WorkerManagerGone(p))
    /\ \A c \in Clients : WF_vars(WorkerApply(c))

FairSpec == Spec /\ Fairness

(***************************************************************************)
(* Invariants                                                              *)
(***************************************************************************)

\* At most one owner of a shard per epoch: no two live processes believe they
\* own shard s at the same epoch ...
OneOwnerPerEpoch ==
    \A s \in Shards, p, q \in Procs :
        p # q /\ Running(p) /\ Running(q) /\ owned[p][s] # 0 => owned[p][s] # owned[q][s]

\* ... and over the whole history, writes of shard s under epoch e were accepted
\* by one process only (see the action property AcceptChecks below).

\* Every acknowledged write is in the engine of the data dir that holds its
\* shard (for a killed process: in the page cache, kept by the restart).
AckedInEngine ==
    \A w \in acked : w \in store[DataDir(owner[w[1]])]

\* When the manager has exited and every worker answered Shutdown (the client's
\* `tessera shutdown` succeeded), every acknowledged write was synced.
DurableWhenManagerExits ==
    (mphase = "exited" /\ tellFailed = {}) =>
        \A w \in acked : w \in synced[DataDir(owner[w[1]])]

\* A worker that answered Shutdown accepts nothing afterwards and had nothing in
\* flight when it answered (the drain).
ToldWorkersQuiet ==
    \A n \in tellOk : \A c \in Clients :
        req[c].st = "accepted" => req[c].proc # AddrProc(n)

(***************************************************************************)
(* Properties of each acceptance (action properties, checked per step)     *)
(***************************************************************************)

\* Client c's request is accepted in this step, by process p for shard s at epoch e.
AcceptStep(c) == req[c].st = "sent" /\ req'[c].st = "accepted"

\* What the code guarantees about every accepted request:
\*  - one process per (shard, epoch): the first acceptor recorded is this one;
\*  - a worker that was told to shut down (or fenced) accepts nothing;
\*  - a client that saw "shutting_down" in its map sends nothing (ClientSend);
\*  - the acceptor holds the shard's current epoch at the manager, or is a
\*    zombie: not the node's current incarnation at the manager, and not yet told
\*    so by a heartbeat (a fenced process has sd set and refuses).
AcceptChecks ==
    [][\A c \in Clients :
         AcceptStep(c) =>
           LET p == req'[c].proc
               s == req[c].w[1]
               e == req[c].epoch
           IN /\ acceptedBy[s][e] \in {NoProc, p}
              /\ ~sd[p] /\ ~leaving[p]
              /\ cmap[c].formed /\ ~cmap[c].sd
              /\ \/ e = epoch[s] /\ owner[s] = NodeOf(p) /\ minc[NodeOf(p)] = IncOf(p)
                 \/ minc[NodeOf(p)] # IncOf(p)
      ]_vars

\* Stronger: the acceptor holds the shard's current epoch and is the node's
\* current incarnation (no zombie ever accepts).
AcceptOnlyCurrentEpoch ==
    [][\A c \in Clients :
         AcceptStep(c) =>
           LET p == req'[c].proc
               s == req[c].w[1]
           IN req[c].epoch = epoch[s] /\ owner[s] = NodeOf(p) /\ minc[NodeOf(p)] = IncOf(p)
      ]_vars

\* The manager never goes back to an incarnation older than the one it has.
IncarnationMonotonic ==
    [][\A n \in Nodes : minc'[n] >= minc[n]]_vars

\* Issue 6's wording "no request accepted after shutdown has begun", read as
\* "after the manager entered shutting_down".  The code does NOT guarantee this
\* (a client with a cached "serving" map reaches a worker not yet told); see
\* tla/findings/Orchestrator_accept_after_begin.cfg.
NoAcceptAfterManagerShutdown ==
    [][\A c \in Clients : AcceptStep(c) => mphase = "running"]_vars

(***************************************************************************)
(* Liveness                                                                *)
(***************************************************************************)

\* Once shutdown has begun, the manager exits.
ShutdownCompletes == (mphase = "shutting_down") ~> (mphase = "exited")

\* Once shutdown has begun, the manager exits and no worker process is left.
NoProcessLeft ==
    (mphase = "shutting_down") ~> (mphase = "exited" /\ \A p \in Procs : ~Running(p))

\* Symmetry of node ids and clients (safety configurations only).
Symmetry == Permutations(Nodes) \cup Permutations(Clients)
=============================================================================
