----------------------------- MODULE Protection -----------------------------
(***************************************************************************)
(* Tessera's erasure-coded protection and recovery protocol (DESIGN.md     *)
(* section 6): one stripe group of K data workers and M parity holders.    *)
(*                                                                         *)
(* What is modelled:                                                       *)
(*  - Writes, log first: a worker's write batch gets the next sequence     *)
(*    number s, is appended to the TAIL of every holder (a holder stores   *)
(*    it only if the message's epoch is not below the highest epoch it has *)
(*    seen for the worker), and only when every holder acknowledged is it  *)
(*    committed locally (visible to readers) and acknowledged to the       *)
(*    client ([MinHolders < M] when MinHolders holders did: degraded       *)
(*    mode, below).  One write in flight per worker.                       *)
(*  - Parity generations: the worker pins a snapshot at its applied seq a  *)
(*    and sends every holder Delta(from, to = a); the holder applies it    *)
(*    only if it records generation `from`, and then, in one atomic step,  *)
(*    adds c * (Img(a) - Img(from)) to its parity, records a and drops the *)
(*    tail entries <= a.  Holders apply at different times.  The worker    *)
(*    releases the old snapshot when every holder acknowledged.  A holder  *)
(*    that records another generation refuses, and the worker re-protects  *)
(*    from the generation the holder records.                              *)
(*  - Crash with the disk intact (SIGKILL, machine crash): commits that    *)
(*    were not synced may be lost, back to the newest pinned generation    *)
(*    (a pinned snapshot is durable).  The restart is a new incarnation    *)
(*    with a new epoch: it raises every holder's epoch for the worker      *)
(*    (fencing the dead incarnation's messages still in flight), reads     *)
(*    their generations and tails, re-pins the generations they record,    *)
(*    replays the tail after its applied seq, brings every holder's tail   *)
(*    up to what it applied, and only then serves.  A half-done            *)
(*    generation advance is completed by the ordinary delta steps.         *)
(*  - Disk loss of a worker: the manager bumps its epoch and freezes       *)
(*    generation advances; the new incarnation fences the holders, decodes *)
(*    its image at the generation(s) the holders record from the parity    *)
(*    and the survivors' pinned images, replays the tail, brings the       *)
(*    holders' tails up to date and serves.  The old process may live on  *)
(*    as a ZOMBIE with the old epoch and keep writing and serving reads.   *)
(*  - Disk loss of a holder: the replacement starts empty (parity 0, every *)
(*    generation 0 = the empty image, empty tails) and knows the current   *)
(*    epochs from the manager; the workers re-protect to it from           *)
(*    generation 0 and re-append their tails.  Acknowledgements the lost   *)
(*    holder gave for a write still in flight no longer count.             *)
(*  - At most M nodes are lost "at once": a node whose disk was lost       *)
(*    counts as failed until its recovery has completed.                   *)
(*                                                                         *)
(* Abstractions and why:                                                   *)
(*  - A worker's region is ONE page, and its content after applying        *)
(*    batches 1..s is the number Img(w, s) in Z_Prime (Img(w, 0) = 0, the  *)
(*    empty image; every other value distinct per worker).  XOR is addition *)
(*    in GF(2)^n and Reed-Solomon is linear over GF(2^8); all the protocol *)
(*    relies on is linearity and the invertibility of the coefficient      *)
(*    submatrices, which Z_Prime with c_1i = 1, c_2i = i has (M <= 2).      *)
(*    Stripes are independent, so one page per worker loses nothing.     *)
(*  - A batch is identified by (worker, seq): the content of seq s is a    *)
(*    function of s.  Two different batches with the same seq (a zombie's *)
(*    and the new incarnation's) are told apart only by the Fencing        *)
(*    invariant, which requires every write a zombie acknowledges to be    *)
(*    part of the state the new incarnation started from.                 *)
(*  - Messages: each worker has at most one append and one delta per      *)
(*    holder in flight (it waits for all acknowledgements); a holder's     *)
(*    handling and the worker's receipt of the answer are one step.  The   *)
(*    messages of a dead incarnation may still be delivered until its      *)
(*    successor fences the holders; after that they would be refused, so   *)
(*    they are dropped.  A restart/rebuild is one step: it contacts all    *)
(*    holders (raising their epochs), reads them, decodes, replays, appends *)
(*    the entries each holder misses and starts serving.  Nothing is       *)
(*    served before that step ends and every acknowledged write is in the  *)
(*    tails already, so splitting it adds states but no behaviour the      *)
(*    invariants can see; in the code the manager's freeze of generation   *)
(*    advances is what keeps the reads of a rebuild consistent.  Likewise  *)
(*    the workers' re-append of their tails to a replaced holder happens   *)
(*    with the loss (the replacement counts as failed until re-protected). *)
(*  - A crash that loses unsynced commits (power cut) counts as a failure  *)
(*    until the restart: such a worker plus M lost holders loses writes.   *)
(*  - The manager is not modelled beyond epochs, failure detection and the *)
(*    freeze; readers are a `seen` high-water mark per worker.             *)
(*                                                                         *)
(* Design switches (constants), set as the protocol wants in the `make     *)
(* tla` configurations; each tla/findings/ configuration flips one:        *)
(*  VisibleFirst      commit locally (visible) before the tail appends are *)
(*                    acknowledged                         (wrong: FALSE)  *)
(*  FromCheck         holders apply a delta only if they record `from`     *)
(*                                                         (right: TRUE)   *)
(*  ReleaseOnFirstAck release the old snapshot on the first holder's ack   *)
(*                                                         (wrong: FALSE)  *)
(*  EpochCheck        holders refuse appends/deltas of a stale epoch       *)
(*                                                         (right: TRUE)   *)
(*  KeepPrevParity    a holder keeps the last delta it applied per worker  *)
(*                    (so it can also decode at the previous generation)   *)
(*                    until the next delta for that worker; needed for     *)
(*                    M >= 2 (see tla/README.md, Protection finding 4;    *)
(*                    not needed for M = 1: FALSE in Protection.cfg).     *)
(*  CommitFirst       with ONE holder (M = 1): commit locally while the    *)
(*                    tail append is in flight, HIDDEN from readers (they  *)
(*                    and advances use the state before it) until the      *)
(*                    holder acknowledges; if the worker gives up on the   *)
(*                    append it undoes the commit in a new local commit    *)
(*                    that keeps the seq (GiveUp).  No effect for M > 1.   *)
(*                    (orchestrator/src/protector.cc DriveTail, since the  *)
(*                    overlapped commit.)                                  *)
(*  SyncUndo          [CommitFirst] the undo commit is durable at once (a  *)
(*                    power cut cannot lose it while keeping the hidden    *)
(*                    commit before it)            (needed: see README)    *)
(*  SettleBeforeFail  [CommitFirst] a give-up is reported as a failure at  *)
(*                    once only if every holder that did not store the     *)
(*                    append refused it (an answer: it did not store it).  *)
(*                    If some holder gave no answer, the worker first tries *)
(*                    a settling advance of the visible snapshot (which     *)
(*                    records the given-up seq): the write is reported     *)
(*                    FAILED if every holder then records a generation     *)
(*                    covering the seq (its tail entry is dropped), else   *)
(*                    its OUTCOME UNKNOWN (it may be revived by a rebuild), *)
(*                    and the worker retries such advances until covered.  *)
(*                    (Protector::SettleGivenUp; FALSE: reported failed at *)
(*                    once, the code before: tla/README.md finding 7.)     *)
(* Environment switch:                                                     *)
(*  AnswerLost        [CommitFirst] the worker may give up on an append    *)
(*                    the holder did store (its answer lost: a timeout, a  *)
(*                    holder restart); otherwise a given-up append is one  *)
(*                    no holder stores (refused, holder gone, unreachable). *)
(* Degraded acknowledgement (`tessera worker --min-holders N`):            *)
(*  MinHolders        1..M: a write is committed locally (visible) and     *)
(*                    acknowledged once MinHolders holders stored its tail *)
(*                    entry (Protector::Write, `p.need`); the others did   *)
(*                    not store it (refused, unreachable) and may store    *)
(*                    later entries: a HOLE in their tail, until a         *)
(*                    generation they record covers it or a restart's      *)
(*                    catch-up fills it.  MinHolders = M is the code's     *)
(*                    default and the model without degraded mode.  The    *)
(*                    guarantee is weakened accordingly (Durability below: *)
(*                    MinHolders failures, not M, for a worker while one   *)
(*                    of its writes acknowledged degraded is missing at a  *)
(*                    holder), and so is the environment's failure bound   *)
(*                    (FailBound): failures beyond what is promised lose   *)
(*                    writes by definition and are not generated.          *)
(*  UnionReplay       a restart or rebuild replays the UNION of every      *)
(*                    holder's tail (Protector::ReplayTails since 0890b26; *)
(*                    right: TRUE).  FALSE: the code before, which replayed *)
(*                    only the holder with the longest tail (the highest   *)
(*                    tail_last among those whose generation does not     *)
(*                    cover the replay's start; ties either way).          *)
(*                    Indistinguishable with MinHolders = M.               *)
(***************************************************************************)
EXTENDS Naturals, Integers, FiniteSets, TLC

CONSTANTS
    K,                 \* data workers 1..K
    M,                 \* parity holders 1..M (1: xor, 2: rs)
    Prime,             \* the field Z_Prime of the abstract page images
    MaxSeq,            \* writes per worker: seqs 1..MaxSeq
    MaxAdv,            \* generation advances in total
    MaxCrash,          \* disk-intact crashes in total
    MaxLoss,           \* disk losses (workers or holders) in total
    Zombies,           \* a worker whose disk is declared lost may live on
    VisibleFirst, FromCheck, ReleaseOnFirstAck, EpochCheck, KeepPrevParity,
    CommitFirst, SyncUndo, AnswerLost, SettleBeforeFail,
    MinHolders,        \* holders that must store a tail entry (--min-holders)
    UnionReplay

ASSUME K \in 1..3 /\ M \in 1..2 /\ MaxSeq \in 1..4 /\ MinHolders \in 1..M
ASSUME Prime \in Nat /\ Prime > K * MaxSeq /\ Prime > K
ASSUME {Zombies, VisibleFirst, FromCheck, ReleaseOnFirstAck, EpochCheck,
        KeepPrevParity, CommitFirst, SyncUndo, AnswerLost, SettleBeforeFail,
        UnionReplay} \subseteq BOOLEAN
ASSUME ~(VisibleFirst /\ CommitFirst)

Workers  == 1..K
Holders  == 1..M
Seqs     == 0..MaxSeq
MaxEpoch == 1 + MaxCrash + MaxLoss
Epochs   == 1..MaxEpoch
F_p      == 0..(Prime - 1)
NoGen    == -1                   \* "nothing recoverable"

(***************************************************************************)
(* Arithmetic                                                              *)
(***************************************************************************)
Mod(x)   == ((x % Prime) + Prime) % Prime
InvTab   == [a \in 1..(Prime - 1) |-> CHOOSE x \in 1..(Prime - 1) : (a * x) % Prime = 1]
Inv(a)   == InvTab[Mod(a)]
Max(S)   == CHOOSE x \in S : \A y \in S : y <= x
Min(S)   == CHOOSE x \in S : \A y \in S : x <= y
RECURSIVE SumOver(_, _)
SumOver(f, S) == IF S = {} THEN 0
                 ELSE LET x == CHOOSE x \in S : TRUE IN f[x] + SumOver(f, S \ {x})

\* Coefficient of worker i in holder j's parity (xor: all 1; rs: rows 1 and i).
Coef(j, i) == IF j = 1 THEN 1 ELSE i % Prime

\* The largest r >= b such that b+1..r are all in the set of tail entries T:
\* how far replaying the tail from seq b gets.
Extend(b, T) ==
    LET ok(r) == \A s \in (b + 1)..r : s \in T
    IN CHOOSE r \in b..MaxSeq : ok(r) /\ (r = MaxSeq \/ ~ok(r + 1))

VARIABLES
    \* ---- data workers (the live incarnation; a dead one's in-flight messages) ----
    wst,       \* "up" | "crashed" | "lost"
    ep,        \* the manager's epoch for the worker
    iep,       \* the epoch of the worker's latest incarnation (its messages carry it)
    applied,   \* last committed seq (local engine)
    wr,        \* seq of the write in flight (0: none)
    wacks,     \* holders that acknowledged its tail append
    pg,        \* protected generation (pinned snapshot)
    ng,        \* generation being advanced to (= pg when none); pinned too
    gacks,     \* holders known to record ng
    dfrom,     \* dfrom[w][j]: `from` of the delta in flight to holder j
    cut,       \* the last crash lost unsynced commits (a failure until it restarts)
    \* ---- parity holders ----
    par,       \* par[j]: parity value
    rec,       \* rec[j][w]: generation holder j records for worker w
    prev,      \* prev[j][w]: generation before the last delta (KeepPrevParity)
    dpar,      \* dpar[j][w]: the last delta applied for w (KeepPrevParity)
    tail,      \* tail[j][w]: seqs of w's batches stored at j
    hep,       \* hep[j][w]: highest epoch of w that j has seen
    hdown,     \* hdown[j]: j is a replacement not yet fully re-protected
    \* ---- the zombie (at most one) ----
    zst,       \* "none" | "alive" | "fenced"
    zw, ze,    \* its worker and its (old) epoch
    zapplied, zwr, zacks,
    \* ---- bounds and history ----
    crashes, losses, advances,
    ackedMax,  \* highest seq of w acknowledged to a client (writes are sequential)
    seen,      \* highest seq of w that has been visible to readers
    base,      \* seq the latest incarnation of w resumed from (after replay)
    rebuilt,   \* <<gen, decoded image>> of w's last rebuild, or <<NoGen, 0>>
    degraded,  \* [MinHolders < M] seqs of w acknowledged while some holder had
               \* not stored their tail entry (constant {} when MinHolders = M)
    \* ---- CommitFirst (constant {} and FALSE without it) ----
    \* A given-up seq (its write undone locally) is in exactly one of dropped,
    \* settling and unsure (GivenUp).
    dropped,   \* seqs of w whose write was given up and reported FAILED
    settling,  \* [SettleBeforeFail] given up, not reported yet: the worker is
               \* trying to make every holder drop its possible tail entry
    unsure,    \* [SettleBeforeFail] given up and reported as of UNKNOWN outcome
               \* (or not reported at all: the worker died while settling)
    undos,     \* given-up seqs whose hidden commit and (not yet durable) undo
               \* are both in w's engine: a power cut may keep the one and lose
               \* the other
    revived    \* ghost: w's engine holds the batch of a write in `dropped`

workerVars == <<wst, ep, iep, applied, wr, wacks, pg, ng, gacks, dfrom, cut>>
holderVars == <<par, rec, prev, dpar, tail, hep, hdown>>
zombieVars == <<zst, zw, ze, zapplied, zwr, zacks>>
histVars   == <<crashes, losses, advances, ackedMax, seen, base, rebuilt, degraded>>
cfVars     == <<dropped, settling, unsure, undos, revived>>
vars == <<workerVars, holderVars, zombieVars, histVars, cfVars>>

\* The seqs of w whose write was given up, whatever the client was told.
GivenUp(w) == dropped[w] \cup settling[w] \cup unsure[w]

\* The page image of worker w after the batches 1..s that were not given up
\* (a given-up seq changes nothing: its undo restored the previous values).
\* When s is given up nothing records generation s or later yet (advances pin
\* only the visible state), so no parity changes meaning.  (A write of unknown
\* outcome that a rebuild revives keeps this labelling: only seqs matter to
\* the invariants, and every node computes with the same Img.)
RECURSIVE Img(_, _)
Img(w, s) == IF s = 0 THEN 0
             ELSE IF s \in GivenUp(w) THEN Img(w, s - 1)
             ELSE ((w - 1) * MaxSeq + s) % Prime

\* [CommitFirst] with one holder the worker's latest local commit is hidden
\* while its append is in flight; readers and advances use the state before.
CF           == CommitFirst /\ M = 1
Hidden(w)    == CF /\ wr[w] # 0 /\ applied[w] = wr[w]
VisibleSeq(w) == IF Hidden(w) THEN applied[w] - 1 ELSE applied[w]

\* Replaying the tail entries T after seq b: a given-up seq that no holder
\* stored is no gap (the replay simply has no entry for it); one that a
\* holder did store (AnswerLost) is replayed, reviving the given-up write.
\* RevivesOf: it revives one of the given-up seqs S; Revives: a write reported
\* FAILED (one of unknown outcome may be revived).
Replay(w, b, T)  == Extend(b, T \cup GivenUp(w))
RevivesOf(S, w, b, T) == \E s \in S \cap T : b < s /\ s <= Replay(w, b, T)
Revives(w, b, T) == RevivesOf(dropped[w], w, b, T)

Live(w)   == wst[w] = "up"
\* Nodes that count as failed: a worker from the loss of its disk until it
\* serves again, or from a crash that lost unsynced commits until it serves
\* again; a holder from its loss until it is re-protected.
DownW     == {w \in Workers : wst[w] = "lost" \/ cut[w]}
DownH     == {j \in Holders : hdown[j]}
NumDown   == Cardinality(DownW) + Cardinality(DownH)

\* [MinHolders < M] The writes of w acknowledged degraded that a holder which
\* is not down still misses: neither in its tail nor covered by the
\* generation it records.  Such a hole goes when a generation that holder
\* records covers the seq, or a restart or rebuild of w catches the holder
\* up; a holder that is down (a replacement not yet re-protected) counts as
\* failed anyway.
Weak(w) == {s \in degraded[w] :
               \E j \in Holders \ DownH : s > rec[j][w] /\ s \notin tail[j][w]}

\* The durability promised for w's acknowledged (and read) writes: how many
\* failures, counting the nodes down now, they survive.  M, unless one of
\* w's writes acknowledged degraded is still missing at a holder: then
\* MinHolders, for ALL of w's writes acknowledged so far, not only the
\* degraded one, because a replay cannot cross the hole (a later write stored
\* at every holder is lost with the one before it).  Always M when
\* MinHolders = M (degraded stays empty).
Durability(w) == IF Weak(w) = {} THEN M ELSE MinHolders

\* The environment's bound on nodes down at once: M, as before, except while
\* a worker has a weak write (then MinHolders).  A failure beyond what is
\* promised loses the write by definition; generating it would only make the
\* invariants fail in every later state, so such failures are not generated.
FailBound == Min({Durability(w) : w \in Workers})

TypeOK ==
    /\ wst \in [Workers -> {"up", "crashed", "lost"}]
    /\ ep \in [Workers -> Epochs] /\ iep \in [Workers -> Epochs]
    /\ applied \in [Workers -> Seqs] /\ wr \in [Workers -> Seqs]
    /\ wacks \in [Workers -> SUBSET Holders]
    /\ pg \in [Workers -> Seqs] /\ ng \in [Workers -> Seqs]
    /\ gacks \in [Workers -> SUBSET Holders]
    /\ dfrom \in [Workers -> [Holders -> Seqs]]
    /\ cut \in [Workers -> BOOLEAN]
    /\ par \in [Holders -> F_p]
    /\ rec \in [Holders -> [Workers -> Seqs]] /\ prev \in [Holders -> [Workers -> Seqs]]
    /\ dpar \in [Holders -> [Workers -> F_p]]
    /\ tail \in [Holders -> [Workers -> SUBSET (1..MaxSeq)]]
    /\ hep \in [Holders -> [Workers -> Epochs]]
    /\ hdown \in [Holders -> BOOLEAN]
    /\ zst \in {"none", "alive", "fenced"} /\ zw \in 0..K /\ ze \in 0..MaxEpoch
    /\ zapplied \in Seqs /\ zwr \in Seqs /\ zacks \subseteq Holders
    /\ crashes \in 0..MaxCrash /\ losses \in 0..MaxLoss /\ advances \in 0..MaxAdv
    /\ ackedMax \in [Workers -> Seqs]
    /\ seen \in [Workers -> Seqs] /\ base \in [Workers -> Seqs]
    /\ rebuilt \in [Workers -> ({NoGen} \cup Seqs) \X F_p]
    /\ degraded \in [Workers -> SUBSET (1..MaxSeq)]
    /\ dropped \in [Workers -> SUBSET (1..MaxSeq)]
    /\ settling \in [Workers -> SUBSET (1..MaxSeq)]
    /\ unsure \in [Workers -> SUBSET (1..MaxSeq)]
    /\ \A w \in Workers : dropped[w] \cap settling[w] = {} /\ dropped[w] \cap unsure[w] = {}
                         /\ settling[w] \cap unsure[w] = {}
    /\ undos \in [Workers -> SUBSET (1..MaxSeq)]
    /\ revived \in [Workers -> BOOLEAN]

Init ==
    /\ wst = [w \in Workers |-> "up"]
    /\ ep = [w \in Workers |-> 1] /\ iep = [w \in Workers |-> 1]
    /\ applied = [w \in Workers |-> 0] /\ wr = [w \in Workers |-> 0]
    /\ wacks = [w \in Workers |-> {}]
    /\ pg = [w \in Workers |-> 0] /\ ng = [w \in Workers |-> 0]
    /\ gacks = [w \in Workers |-> Holders]
    /\ dfrom = [w \in Workers |-> [j \in Holders |-> 0]]
    /\ cut = [w \in Workers |-> FALSE]
    /\ par = [j \in Holders |-> 0]
    /\ rec = [j \in Holders |-> [w \in Workers |-> 0]]
    /\ prev = [j \in Holders |-> [w \in Workers |-> 0]]
    /\ dpar = [j \in Holders |-> [w \in Workers |-> 0]]
    /\ tail = [j \in Holders |-> [w \in Workers |-> {}]]
    /\ hep = [j \in Holders |-> [w \in Workers |-> 1]]
    /\ hdown = [j \in Holders |-> FALSE]
    /\ zst = "none" /\ zw = 0 /\ ze = 0 /\ zapplied = 0 /\ zwr = 0 /\ zacks = {}
    /\ crashes = 0 /\ losses = 0 /\ advances = 0
    /\ ackedMax = [w \in Workers |-> 0] /\ seen = [w \in Workers |-> 0] /\ base = [w \in Workers |-> 0]
    /\ rebuilt = [w \in Workers |-> <<NoGen, 0>>]
    /\ degraded = [w \in Workers |-> {}]
    /\ dropped = [w \in Workers |-> {}]
    /\ settling = [w \in Workers |-> {}]
    /\ unsure = [w \in Workers |-> {}]
    /\ undos = [w \in Workers |-> {}]
    /\ revived = [w \in Workers |-> FALSE]

(***************************************************************************)
(* Decoding and the recovery function                                      *)
(***************************************************************************)

\* Images worker i can supply: the empty one and its pinned snapshots
\* (durable, so also after a disk-intact crash).
Avail(i, g) == g = 0 \/ g = pg[i] \/ g = ng[i]

\* The generations of w for which holder j can produce a parity: the one it
\* records and, with KeepPrevParity, the one before its last delta for w.
\* A version of holder j's parity: one such generation per worker.
Versions(j) == IF KeepPrevParity
               THEN {[i \in Workers |-> IF i \in X THEN prev[j][i] ELSE rec[j][i]] :
                       X \in SUBSET Workers}
               ELSE {rec[j]}
\* Its value: subtract the kept deltas of the workers taken at `prev`.
PV(j, v) == Mod(par[j] - SumOver([i \in Workers |->
                             IF v[i] # rec[j][i] THEN dpar[j][i] ELSE 0], Workers))
\* Holder j's version v with the known (surviving) workers' images removed.
Rhs(j, v, L) == Mod(PV(j, v) - SumOver([i \in Workers |->
                                IF i \in L THEN 0 ELSE Coef(j, i) * Img(i, v[i])], Workers))
Usable(j, v, L) == \A i \in Workers \ L : Avail(i, v[i])

\* What decoding can give for lost worker w when the workers L and the holders
\* FH are lost: pairs <<generation, decoded image>>.  |L| = 1: any surviving
\* holder.  |L| = 2 (rs): two surviving holders at a common generation for each
\* lost worker, solved by Cramer's rule.
Options(w, L, FH) ==
    LET S == Holders \ FH IN
    IF Cardinality(L) = 1
    THEN UNION {{<<v[w], Mod(Rhs(j, v, L) * Inv(Coef(j, w)))>> :
                   v \in {v \in Versions(j) : Usable(j, v, L)}} : j \in S}
    ELSE LET u == CHOOSE u \in L : u # w IN
         UNION {LET j1 == jj[1] j2 == jj[2]
                    a11 == Coef(j1, w) a12 == Coef(j1, u)
                    a21 == Coef(j2, w) a22 == Coef(j2, u)
                IN {LET b1 == Rhs(j1, vv[1], L) b2 == Rhs(j2, vv[2], L)
                    IN <<vv[1][w], Mod((b1 * a22 - a12 * b2) * Inv(a11 * a22 - a12 * a21))>> :
                      vv \in {vv \in Versions(j1) \X Versions(j2) :
                                /\ vv[1][w] = vv[2][w] /\ vv[1][u] = vv[2][u]
                                /\ Usable(j1, vv[1], L) /\ Usable(j2, vv[2], L)}} :
                jj \in {jj \in S \X S : jj[1] < jj[2]}}

TailsOf(w, FH) == UNION {tail[j][w] : j \in Holders \ FH}

\* The tail entries a restart or rebuild of w replays after seq b: the union
\* of every holder's tail [UnionReplay], or [~UnionReplay, the code before
\* 0890b26] the tail of one holder: among those whose generation does not
\* cover b, one with the highest tail_last (its highest entry, 0 if none)
\* above b; none: nothing is replayed.  Ties go either way (the code took the
\* first in holder order, which is arbitrary).  The old code applied every
\* entry of that tail, across a hole too (a state that never existed); the
\* model's replay stops at the hole.  Either way the write in the hole is
\* not applied.
TailLast(j, w) == IF tail[j][w] = {} THEN 0 ELSE Max(tail[j][w])
LongestTails(w, b) ==
    LET el == {j \in Holders : rec[j][w] <= b /\ TailLast(j, w) > b}
    IN {j \in el : \A i \in el : TailLast(i, w) <= TailLast(j, w)}
ReplaySources(w, b) ==
    IF UnionReplay THEN {TailsOf(w, {})}
    ELSE IF LongestTails(w, b) = {} THEN {{}}
    ELSE {tail[j][w] : j \in LongestTails(w, b)}

\* The seq recovery produces for worker w when the workers FW and the holders
\* FH have lost their disks: w's own state (if its disk survives) or the best
\* correct decode, followed by the replay of the surviving tails.  NoGen:
\* nothing can be recovered.
Recover(w, FW, FH) ==
    IF w \notin FW THEN Replay(w, applied[w], TailsOf(w, FH))
    ELSE LET good == {o \in Options(w, FW, FH) : o[2] = Img(w, o[1])}
         IN IF good = {} THEN NoGen ELSE Max({Replay(w, o[1], TailsOf(w, FH)) : o \in good})

\* That recovery replays a tail entry of a given-up write in S (RecoverRevives:
\* of one reported FAILED).
RecoverRevivesOf(S, w, FW, FH) ==
    S # {} /\
    IF w \notin FW THEN RevivesOf(S, w, applied[w], TailsOf(w, FH))
    ELSE \E o \in {o \in Options(w, FW, FH) : o[2] = Img(w, o[1])} :
            /\ Replay(w, o[1], TailsOf(w, FH)) = Recover(w, FW, FH)
            /\ RevivesOf(S, w, o[1], TailsOf(w, FH))
RecoverRevives(w, FW, FH) == RecoverRevivesOf(dropped[w], w, FW, FH)

\* Every failure pattern of at most n nodes that includes the nodes that are
\* down now (lost and not yet recovered); Failures: of at most M.
FailuresOf(n) == {f \in (SUBSET Workers) \X (SUBSET Holders) :
                     DownW \subseteq f[1] /\ DownH \subseteq f[2]
                     /\ Cardinality(f[1]) + Cardinality(f[2]) <= n}
Failures == FailuresOf(M)

(***************************************************************************)
(* Writes                                                                  *)
(***************************************************************************)

\* The worker takes the next seq and sends AppendTail(w, epoch, s) to every
\* holder.  [VisibleFirst] it commits locally first (readers see s now).
\* [CommitFirst, one holder] it commits locally while the append is in
\* flight, hidden: readers keep seeing the state before (Hidden, VisibleSeq).
BeginWrite(w) ==
    /\ wst[w] = "up" /\ wr[w] = 0 /\ applied[w] < MaxSeq
    /\ wr' = [wr EXCEPT ![w] = applied[w] + 1]
    /\ wacks' = [wacks EXCEPT ![w] = {}]
    /\ IF VisibleFirst
         THEN /\ applied' = [applied EXCEPT ![w] = @ + 1]
              /\ seen' = [seen EXCEPT ![w] = Max({@, applied[w] + 1})]
         ELSE IF CF
         THEN /\ applied' = [applied EXCEPT ![w] = @ + 1]
              /\ UNCHANGED seen
         ELSE UNCHANGED <<applied, seen>>
    /\ UNCHANGED <<wst, ep, iep, cut, pg, ng, gacks, dfrom, holderVars, zombieVars,
                   crashes, losses, advances, ackedMax, base, rebuilt, degraded, cfVars>>

\* Holder j stores the append (epoch not stale) and acknowledges.  Also for a
\* dead incarnation's append still in flight, until its successor fences j.
\* (A refused append is simply never delivered: nothing changes.)
DeliverAppend(w, j) ==
    /\ wr[w] # 0 /\ j \notin wacks[w] /\ wst[w] \in {"up", "crashed", "lost"}
    /\ ~EpochCheck \/ iep[w] >= hep[j][w]
    /\ tail' = [tail EXCEPT ![j][w] = IF wr[w] > rec[j][w] THEN @ \cup {wr[w]} ELSE @]
    /\ hep' = [hep EXCEPT ![j][w] = IF iep[w] > @ THEN iep[w] ELSE @]
    /\ wacks' = [wacks EXCEPT ![w] = @ \cup {j}]
    /\ UNCHANGED <<wst, ep, iep, cut, applied, wr, pg, ng, gacks, dfrom,
                   par, rec, prev, dpar, hdown, zombieVars, histVars, cfVars>>

\* Every holder acknowledged: commit locally, which makes s visible to readers
\* (`seen`: a reader may read any visible state, so the model assumes one
\* does), and acknowledge the client.  [CommitFirst, one holder] the commit
\* is there already: the acknowledgement reveals it.
\* [MinHolders < M] MinHolders holders acknowledged are enough: the others
\* answered that they did not store it (refused) or gave no answer (down,
\* unreachable) and their append is over (Protector::Write: ready once every
\* holder answered, committed if `stored >= need`).  They did not store the
\* entry (a late delivery would only fill the hole: not modelled) and may
\* store the next ones (DeliverAppend does not look for holes).
CommitWrite(w) ==
    /\ wst[w] = "up" /\ wr[w] # 0 /\ Cardinality(wacks[w]) >= MinHolders
    /\ applied' = [applied EXCEPT ![w] = wr[w]]
    /\ wr' = [wr EXCEPT ![w] = 0]
    /\ wacks' = [wacks EXCEPT ![w] = {}]
    /\ ackedMax' = [ackedMax EXCEPT ![w] = Max({@, wr[w]})]
    /\ seen' = [seen EXCEPT ![w] = Max({@, wr[w]})]
    /\ degraded' = IF wacks[w] = Holders THEN degraded
                   ELSE [degraded EXCEPT ![w] = @ \cup {wr[w]}]
    /\ UNCHANGED <<wst, ep, iep, cut, pg, ng, gacks, dfrom, holderVars,
                   zombieVars, crashes, losses, advances, base, rebuilt, cfVars>>

\* [CommitFirst, one holder] The worker gives up on its append before the
\* holder acknowledged it (refused, the holder gone or unreachable past the
\* timeout): it undoes the hidden commit by a new local commit that restores
\* the previous values and keeps the seq as recorded (Protector::Undo: a
\* restart does not replay s from a tail) and reveals that commit (readers
\* see no change).  The seq is consumed: the next write takes s + 1, and the
\* content at s is that at s - 1 (Img).  The holder did not store the
\* append, or [AnswerLost] it did and the answer was lost.  [~SyncUndo] the
\* undo is not durable yet (as a write without sync).
\* The report: [~SettleBeforeFail] the write is reported failed at once.
\* [SettleBeforeFail] only if every holder that did not store it refused it
\* (an answer: it did not store it); if some holder gave no answer (always
\* so for one that stored it: its answer was lost) the seq is `settling`:
\* the client waits for SettleAdvance / ReportGiveUp.  The model settles
\* only when a holder did store it; when none did, it reports the failure
\* at once whether the holders refused or gave no answer.  That covers the
\* code's settle of such a write: with no tail entry to drop, the settle
\* changes nothing but the timing of the report (its settling advance is one
\* BeginAdvance may take anyway), and FAILED is the report that
\* NoFailedWriteRevived constrains.  (Modelling both answers there multiplied
\* the states by about 12 even with nothing stored, for no behaviour the
\* invariants can see: tla/README.md.)
GiveUp(w) ==
    /\ Live(w) /\ Hidden(w) /\ wacks[w] # Holders
    /\ undos' = IF SyncUndo THEN undos ELSE [undos EXCEPT ![w] = @ \cup {wr[w]}]
    /\ wr' = [wr EXCEPT ![w] = 0]
    /\ wacks' = [wacks EXCEPT ![w] = {}]
    /\ \E stored \in IF AnswerLost THEN BOOLEAN ELSE {FALSE} :
         /\ IF stored
              THEN \E j \in Holders \ wacks[w] :
                     /\ ~EpochCheck \/ iep[w] >= hep[j][w]
                     /\ tail' = [tail EXCEPT ![j][w] = IF wr[w] > rec[j][w] THEN @ \cup {wr[w]} ELSE @]
                     /\ hep' = [hep EXCEPT ![j][w] = IF iep[w] > @ THEN iep[w] ELSE @]
              ELSE UNCHANGED <<tail, hep>>
         /\ IF SettleBeforeFail /\ stored
              THEN /\ settling' = [settling EXCEPT ![w] = @ \cup {wr[w]}]
                   /\ UNCHANGED dropped
              ELSE /\ dropped' = [dropped EXCEPT ![w] = @ \cup {wr[w]}]
                   /\ UNCHANGED settling
    /\ UNCHANGED <<wst, ep, iep, cut, applied, pg, ng, gacks, dfrom, par, rec, prev,
                   dpar, hdown, zombieVars, histVars, unsure, revived>>

\* [SettleBeforeFail] The given-up write's client is answered OUTCOME UNKNOWN:
\* the settling advance did not reach every holder (unreachable, refused,
\* frozen, another advance failing).  The FAILED answer is ReportCovered.
ReportGiveUp(w) ==
    /\ Live(w)
    /\ \E s \in settling[w] :
         /\ settling' = [settling EXCEPT ![w] = @ \ {s}]
         /\ unsure' = [unsure EXCEPT ![w] = @ \cup {s}]
    /\ UNCHANGED <<workerVars, holderVars, zombieVars, histVars, dropped, undos, revived>>

(***************************************************************************)
(* Generation advance                                                      *)
(***************************************************************************)

\* [SettleBeforeFail] The given-up seqs that no generation every holder is
\* known to record covers yet (being settled, or reported as unknown).
Unsettled(w) == {s \in settling[w] \cup unsure[w] : s > ng[w]}

\* Pin a snapshot at the applied seq and send Delta(from = pg, to = applied) to
\* every holder.  Not while the manager has advances frozen (a worker is being
\* rebuilt) or a holder is still being re-protected by this worker.
\* [CommitFirst] the snapshot is the visible one: before a hidden commit.
\* [SettleBeforeFail] this is also the settling advance after a give-up that a
\* holder may have stored (SettleAdvance below); such advances may go on
\* after MaxAdv is used up while a given-up seq is not covered (the advance
\* loop retries every 500 ms): bounded all the same, since ng only grows.
BeginAdvance(w) ==
    /\ wst[w] = "up" /\ pg[w] = ng[w] /\ gacks[w] = Holders
    /\ VisibleSeq(w) > ng[w]
    /\ advances < MaxAdv \/ (SettleBeforeFail /\ Unsettled(w) # {})
    /\ \A v \in Workers : wst[v] # "lost"
    /\ ng' = [ng EXCEPT ![w] = VisibleSeq(w)]
    /\ gacks' = [gacks EXCEPT ![w] = {}]
    /\ dfrom' = [dfrom EXCEPT ![w] = [j \in Holders |-> pg[w]]]
    /\ advances' = IF advances < MaxAdv THEN advances + 1 ELSE advances
    /\ UNCHANGED <<wst, ep, iep, cut, applied, wr, wacks, pg, holderVars, zombieVars,
                   crashes, losses, ackedMax, seen, base, rebuilt, degraded, cfVars>>

\* [SettleBeforeFail] The settling advance for a given-up seq (Protector::
\* SettleGivenUp: Advance of the visible snapshot, which holds the undo
\* commit recording the seq, so the new generation covers it and a holder
\* that applies it drops the tail entry, DeliverDelta), and the advance
\* loop's retries while a given-up seq is not covered.  It waits for an
\* advance in flight (advance_mu_) and for the freeze.  A case of
\* BeginAdvance, named for its fairness (GivenUpSettled).
SettleAdvance(w) == SettleBeforeFail /\ Unsettled(w) # {} /\ BeginAdvance(w)

\* [SettleBeforeFail] With the acknowledgement that makes every holder known
\* to record ng[w] (`acks`), the give-ups being settled that ng[w] covers are
\* answered FAILED (Protector::SettleGivenUp: covered_ >= seq).  The code
\* answers a little later (when Advance returns), but covered_ only grows,
\* so the answer is FAILED all the same; answering in this step only checks
\* the write (NoFailedWriteRevived) from an earlier state on.
ReportCovered(w, acks) ==
    IF Live(w) /\ acks = Holders
    THEN /\ dropped' = [dropped EXCEPT ![w] = @ \cup {s \in settling[w] : s <= ng[w]}]
         /\ settling' = [settling EXCEPT ![w] = {s \in @ : s > ng[w]}]
    ELSE UNCHANGED <<dropped, settling>>

\* Holder j handles Delta(w, epoch, from = dfrom[w][j], to = ng[w]).  If it
\* records `from` (or [~FromCheck] regardless), in one atomic step: parity +=
\* c * (Img(to) - Img(from)), record `to`, drop the tail entries <= to
\* [KeepPrevParity: and keep this delta]; the worker gets the ack.  Otherwise
\* it refuses with the generation it records: the worker counts that as an
\* ack if it is `to`, else re-protects from it (it has that image pinned, see
\* HolderGenPinned).  A dead incarnation's delta is delivered only if applied.
DeliverDelta(w, j) ==
    /\ j \notin gacks[w]
    /\ ~EpochCheck \/ iep[w] >= hep[j][w]
    /\ LET from == dfrom[w][j]
           to   == ng[w]
           d    == Mod(Coef(j, w) * (Img(w, to) - Img(w, from)))
       IN IF ~FromCheck \/ rec[j][w] = from
          THEN /\ par' = [par EXCEPT ![j] = Mod(@ + d)]
               /\ rec' = [rec EXCEPT ![j][w] = to]
               /\ prev' = IF KeepPrevParity THEN [prev EXCEPT ![j][w] = rec[j][w]] ELSE prev
               /\ dpar' = IF KeepPrevParity THEN [dpar EXCEPT ![j][w] = d] ELSE dpar
               /\ tail' = [tail EXCEPT ![j][w] = {s \in @ : s > to}]
               /\ hep' = [hep EXCEPT ![j][w] = IF iep[w] > @ THEN iep[w] ELSE @]
               /\ gacks' = [gacks EXCEPT ![w] = @ \cup {j}]
               /\ dfrom' = [dfrom EXCEPT ![w][j] = 0]
          ELSE /\ Live(w)
               /\ IF rec[j][w] = to
                    THEN /\ gacks' = [gacks EXCEPT ![w] = @ \cup {j}]
                         /\ dfrom' = [dfrom EXCEPT ![w][j] = 0]
                    ELSE /\ dfrom' = [dfrom EXCEPT ![w][j] = rec[j][w]]
                         /\ UNCHANGED gacks
               /\ UNCHANGED <<par, rec, prev, dpar, tail, hep>>
    /\ ReportCovered(w, gacks'[w])
    /\ UNCHANGED <<wst, ep, iep, cut, applied, wr, wacks, pg, ng, hdown, zombieVars,
                   histVars, unsure, undos, revived>>

\* Every holder acknowledged (or [ReleaseOnFirstAck] one did): release the
\* old snapshot.
ReleaseOld(w) ==
    /\ Live(w) /\ pg[w] # ng[w]
    /\ IF ReleaseOnFirstAck THEN gacks[w] # {} ELSE gacks[w] = Holders
    /\ pg' = [pg EXCEPT ![w] = ng[w]]
    /\ UNCHANGED <<wst, ep, iep, cut, applied, wr, wacks, ng, gacks, dfrom, holderVars,
                   zombieVars, histVars, cfVars>>

(***************************************************************************)
(* Crash with the disk intact, and restart                                 *)
(***************************************************************************)

\* The process dies (SIGKILL: its commits survive in the page cache), or the
\* machine does, losing the commits after the newest pinned generation that
\* were not synced (they are in the tails).  Losing commits counts as a failure
\* until the restart has brought the holders up to date.  Its messages in
\* flight stay deliverable until the restart fences the holders.
\* [CommitFirst] A hidden commit survives or is lost like any other.  For a
\* given-up seq a whose undo is not durable (`undos`, above the pinned
\* generation), the power cut may also keep a's hidden commit and lose the
\* undo after it (lostUndo): the engine then holds the failed write's batch.
\* After any crash what survived is durable (`undos` empties).
\* [SettleBeforeFail] a give-up being settled is never reported: its client
\* gets a transport error, an unknown outcome.
Crash(w) ==
    /\ wst[w] = "up" /\ crashes < MaxCrash
    /\ crashes' = crashes + 1
    /\ wst' = [wst EXCEPT ![w] = "crashed"]
    /\ \E a \in ng[w]..applied[w], lostUndo \in BOOLEAN :
         LET lost == a < applied[w] \/ lostUndo IN
         /\ lostUndo => a \in undos[w] /\ a > ng[w]
         /\ applied' = [applied EXCEPT ![w] = a]
         /\ lost => ~cut[w] /\ NumDown < FailBound
         /\ cut' = [cut EXCEPT ![w] = @ \/ lost]
         /\ revived' = [revived EXCEPT ![w] = @ \/ (lostUndo /\ a \in dropped[w])]
    /\ undos' = [undos EXCEPT ![w] = {}]
    /\ unsure' = [unsure EXCEPT ![w] = @ \cup settling[w]]
    /\ settling' = [settling EXCEPT ![w] = {}]
    /\ UNCHANGED <<ep, iep, wr, wacks, pg, ng, gacks, dfrom, holderVars, zombieVars,
                   losses, advances, ackedMax, seen, base, rebuilt, degraded, dropped>>

\* After a restart or rebuild: the delta still owed to holder j starts from
\* the generation j records (0 = none owed: j records the newest).
PendFrom(w, j, recs) == IF rec[j][w] = Max(recs) THEN 0 ELSE rec[j][w]

\* Holder j's tail after the worker brings it up to seq a: its batches after
\* the lowest generation it re-pinned (j keeps those above what it records).
\* (A given-up seq has nothing to append.)
CaughtUp(w, j, lo, a) ==
    tail[j][w] \cup {s \in (lo + 1)..a : s > rec[j][w] /\ s \notin GivenUp(w)}

\* Restart on the intact disk: a new incarnation (new epoch); it contacts every
\* holder first (raising the epoch it has seen: the dead incarnation's messages
\* are refused from now on), reads their generations and tails, re-pins the
\* generations they record (lowest as pg, highest as ng; a half-done advance
\* goes on by DeliverDelta), replays the tail after its applied seq, appends
\* to every holder the entries it is missing, and serves: readers may now see
\* its state, including replayed writes that were never acknowledged.  (One
\* step: nothing is served before the appends, and the acknowledged writes
\* are in the tails already, so no interleaving with it matters.)
\* [~UnionReplay] it replays one holder's tail (ReplaySources).
Restart(w) ==
    /\ wst[w] = "crashed"
    /\ \E T \in ReplaySources(w, applied[w]) :
       LET e    == ep[w] + 1
           a    == Replay(w, applied[w], T)
           recs == {rec[j][w] : j \in Holders}
       IN /\ \A g \in recs : Avail(w, g) \/ g \in applied[w]..a
          /\ ep' = [ep EXCEPT ![w] = e]
          /\ iep' = [iep EXCEPT ![w] = e]
          /\ hep' = [j \in Holders |-> [hep[j] EXCEPT ![w] = e]]
          /\ applied' = [applied EXCEPT ![w] = a]
          /\ seen' = [seen EXCEPT ![w] = Max({@, a})]
          /\ pg' = [pg EXCEPT ![w] = Min(recs)]
          /\ ng' = [ng EXCEPT ![w] = Max(recs)]
          /\ gacks' = [gacks EXCEPT ![w] = {j \in Holders : rec[j][w] = Max(recs)}]
          /\ dfrom' = [dfrom EXCEPT ![w] = [j \in Holders |-> PendFrom(w, j, recs)]]
          /\ tail' = [j \in Holders |-> [tail[j] EXCEPT ![w] = CaughtUp(w, j, Min(recs), a)]]
          /\ revived' = [revived EXCEPT ![w] = @ \/ Revives(w, applied[w], T)]
    /\ wst' = [wst EXCEPT ![w] = "up"]
    /\ cut' = [cut EXCEPT ![w] = FALSE]
    /\ wr' = [wr EXCEPT ![w] = 0]
    /\ wacks' = [wacks EXCEPT ![w] = {}]
    /\ UNCHANGED <<par, rec, prev, dpar, hdown, zombieVars, crashes, losses,
                   advances, ackedMax, base, rebuilt, degraded, dropped, settling, unsure,
                   undos>>

(***************************************************************************)
(* Disk loss of a worker, rebuild, zombie                                  *)
(***************************************************************************)

\* The worker's disk is lost (or the manager declares it so).  The manager
\* bumps its epoch and freezes advances.  The old process is dead (its
\* messages in flight may still arrive) or [Zombies] lives on as a zombie
\* with the old epoch, taking its write in flight with it.  [SettleBeforeFail]
\* A give-up being settled is answered as of unknown outcome (the zombie's
\* own advances are not modelled) or not at all.
LoseWorker(w) ==
    /\ wst[w] \in {"up", "crashed"}
    /\ losses < MaxLoss /\ NumDown < FailBound
    /\ losses' = losses + 1
    /\ wst' = [wst EXCEPT ![w] = "lost"]
    /\ ep' = [ep EXCEPT ![w] = @ + 1]
    /\ applied' = [applied EXCEPT ![w] = 0]
    /\ \/ UNCHANGED <<zombieVars, wr>>
       \/ /\ Zombies /\ zst = "none" /\ wst[w] = "up"
          /\ zst' = "alive" /\ zw' = w /\ ze' = iep[w]
          /\ zapplied' = applied[w] /\ zwr' = wr[w] /\ zacks' = wacks[w]
          /\ wr' = [wr EXCEPT ![w] = 0]
    /\ undos' = [undos EXCEPT ![w] = {}]
    /\ revived' = [revived EXCEPT ![w] = FALSE]
    /\ unsure' = [unsure EXCEPT ![w] = @ \cup settling[w]]
    /\ settling' = [settling EXCEPT ![w] = {}]
    /\ UNCHANGED <<iep, cut, wacks, pg, ng, gacks, dfrom, holderVars,
                   crashes, advances, ackedMax, seen, base, rebuilt, degraded, dropped>>

\* The new incarnation of a lost worker: it fences every holder (raises the
\* epoch it has seen for w), decodes its image from the parity and the
\* surviving workers' pinned images (another worker still lost counts as
\* unknown), takes the decode from which the tail replay gets furthest,
\* replays the tail, pins the generations the holders record (each must be
\* decodable or reachable by replay), appends to every holder the entries it
\* is missing and serves (one step, as in Restart).  [~UnionReplay] the
\* decode is chosen as with the union, and then only one holder's tail is
\* replayed (ReplaySources).
Rebuild(w) ==
    /\ wst[w] = "lost"
    /\ LET opts  == Options(w, {v \in Workers : wst[v] = "lost"}, {})
           U     == TailsOf(w, {})
           best  == Max({Replay(w, o[1], U) : o \in opts} \cup {NoGen})
           recs  == {rec[j][w] : j \in Holders}
           e     == ep[w]
       IN \E o \in opts : \E T \in ReplaySources(w, o[1]) :
            LET a == Replay(w, o[1], T) IN
            /\ Replay(w, o[1], U) = best
            /\ \A g \in recs : g = 0 \/ g \in o[1]..a \/ g \in {p[1] : p \in opts}
            /\ rebuilt' = [rebuilt EXCEPT ![w] = o]
            /\ applied' = [applied EXCEPT ![w] = a]
            /\ seen' = [seen EXCEPT ![w] = Max({@, a})]
            /\ base' = [base EXCEPT ![w] = a]
            /\ iep' = [iep EXCEPT ![w] = e]
            /\ hep' = [j \in Holders |-> [hep[j] EXCEPT ![w] = e]]
            /\ pg' = [pg EXCEPT ![w] = Min(recs)]
            /\ ng' = [ng EXCEPT ![w] = Max(recs)]
            /\ gacks' = [gacks EXCEPT ![w] = {j \in Holders : rec[j][w] = Max(recs)}]
            /\ dfrom' = [dfrom EXCEPT ![w] = [j \in Holders |-> PendFrom(w, j, recs)]]
            /\ tail' = [j \in Holders |-> [tail[j] EXCEPT ![w] = CaughtUp(w, j, Min(recs), a)]]
            /\ revived' = [revived EXCEPT ![w] = Revives(w, o[1], T)]
    /\ wst' = [wst EXCEPT ![w] = "up"]
    /\ wr' = [wr EXCEPT ![w] = 0]
    /\ wacks' = [wacks EXCEPT ![w] = {}]
    /\ UNCHANGED <<ep, cut, par, rec, prev, dpar, hdown, zombieVars, crashes, losses,
                   advances, ackedMax, degraded, dropped, settling, unsure, undos>>

\* The zombie keeps writing with its old epoch ...
ZBegin ==
    /\ zst = "alive" /\ zwr = 0 /\ zapplied < MaxSeq
    /\ zwr' = zapplied + 1 /\ zacks' = {}
    /\ UNCHANGED <<workerVars, holderVars, zst, zw, ze, zapplied, histVars, cfVars>>

\* ... holder j stores its append if the epoch is not stale; otherwise it
\* refuses and the zombie learns that it has been replaced and stops.
ZDeliver(j) ==
    /\ zst = "alive" /\ zwr # 0 /\ j \notin zacks
    /\ IF ~EpochCheck \/ ze >= hep[j][zw]
         THEN /\ tail' = [tail EXCEPT ![j][zw] = IF zwr > rec[j][zw] THEN @ \cup {zwr} ELSE @]
              /\ hep' = [hep EXCEPT ![j][zw] = IF ze > @ THEN ze ELSE @]
              /\ zacks' = zacks \cup {j}
              /\ UNCHANGED zst
         ELSE /\ zst' = "fenced"
              /\ UNCHANGED <<tail, hep, zacks>>
    /\ UNCHANGED <<workerVars, par, rec, prev, dpar, hdown, zw, ze, zapplied, zwr, histVars,
                   cfVars>>

\* ... and commits (readers may see it) and acknowledges when every holder
\* acknowledged ([MinHolders < M] MinHolders of them, as CommitWrite).
ZCommit ==
    /\ zst = "alive" /\ zwr # 0 /\ Cardinality(zacks) >= MinHolders
    /\ zapplied' = zwr /\ zwr' = 0 /\ zacks' = {}
    /\ ackedMax' = [ackedMax EXCEPT ![zw] = Max({@, zwr})]
    /\ seen' = [seen EXCEPT ![zw] = Max({@, zwr})]
    /\ degraded' = IF zacks = Holders THEN degraded
                   ELSE [degraded EXCEPT ![zw] = @ \cup {zwr}]
    /\ UNCHANGED <<workerVars, holderVars, zst, zw, ze, crashes, losses, advances,
                   base, rebuilt, cfVars>>

(***************************************************************************)
(* Disk loss of a parity holder                                            *)
(***************************************************************************)

\* Holder j's disk is lost; its replacement starts empty, with the current
\* epochs from the manager.  Live workers learn of it: acknowledgements the
\* old j gave for a write in flight no longer count (the append goes to the
\* replacement), they re-protect to it from generation 0 (a delta already in
\* flight to j arrives at the replacement, which refuses it unless it starts
\* from 0), and they re-append their tail after pg (one step with the loss:
\* until it is re-protected the replacement counts as failed, so its tail is
\* not relied upon before).  Messages of dead incarnations to the old j are
\* lost.  The zombie too must append to the replacement (which refuses it).
LoseHolder(j) ==
    /\ ~hdown[j] /\ losses < MaxLoss /\ NumDown < FailBound
    /\ losses' = losses + 1
    /\ hdown' = [hdown EXCEPT ![j] = TRUE]
    /\ par' = [par EXCEPT ![j] = 0]
    /\ rec' = [rec EXCEPT ![j] = [w \in Workers |-> 0]]
    /\ prev' = [prev EXCEPT ![j] = [w \in Workers |-> 0]]
    /\ dpar' = [dpar EXCEPT ![j] = [w \in Workers |-> 0]]
    /\ tail' = [tail EXCEPT ![j] = [w \in Workers |->
                   IF Live(w) THEN {s \in (pg[w] + 1)..VisibleSeq(w) : s \notin GivenUp(w)}
                   ELSE {}]]
    /\ hep' = [hep EXCEPT ![j] = ep]
    /\ wacks' = [w \in Workers |-> IF Live(w) THEN wacks[w] \ {j}
                                   ELSE IF wr[w] # 0 THEN wacks[w] \cup {j} ELSE wacks[w]]
    /\ gacks' = [w \in Workers |-> IF Live(w) THEN gacks[w] \ {j} ELSE gacks[w] \cup {j}]
    /\ dfrom' = [w \in Workers |-> IF Live(w) /\ j \notin gacks[w] THEN dfrom[w]
                                   ELSE [dfrom[w] EXCEPT ![j] = 0]]
    /\ zacks' = zacks \ {j}
    /\ UNCHANGED <<wst, ep, iep, cut, applied, wr, pg, ng, zst, zw, ze, zapplied, zwr,
                   crashes, advances, ackedMax, seen, base, rebuilt, degraded, cfVars>>

\* The replacement is fully protected again: every worker is up, has re-
\* protected to it and brought its tail up to date.
HolderRecovered(j) ==
    /\ hdown[j]
    /\ \A w \in Workers : wst[w] = "up" /\ j \in gacks[w]
    /\ hdown' = [hdown EXCEPT ![j] = FALSE]
    /\ UNCHANGED <<workerVars, par, rec, prev, dpar, tail, hep, zombieVars, histVars,
                   cfVars>>

Next ==
    \/ \E w \in Workers :
         \/ BeginWrite(w) \/ CommitWrite(w) \/ GiveUp(w)
         \/ ReportGiveUp(w)
         \/ BeginAdvance(w) \/ ReleaseOld(w)
         \/ Crash(w) \/ Restart(w)
         \/ LoseWorker(w) \/ Rebuild(w)
         \/ \E j \in Holders : DeliverAppend(w, j) \/ DeliverDelta(w, j)
    \/ ZBegin \/ ZCommit \/ \E j \in Holders : ZDeliver(j)
    \/ \E j \in Holders : LoseHolder(j) \/ HolderRecovered(j)

Spec == Init /\ [][Next]_vars

(***************************************************************************)
(* Invariants                                                              *)
(***************************************************************************)

\* Parity always equals the coded sum of the images it records (and a kept
\* delta is the difference between the two generations it spans).
ParityConsistent ==
    \A j \in Holders :
        /\ par[j] = Mod(SumOver([i \in Workers |-> Coef(j, i) * Img(i, rec[j][i])], Workers))
        /\ KeepPrevParity =>
             \A i \in Workers :
                dpar[j][i] = Mod(Coef(j, i) * (Img(i, rec[j][i]) - Img(i, prev[j][i])))

\* Every acknowledged write survives the loss of any M nodes (counting the
\* ones down now).  [MinHolders < M] Of any Durability(w) nodes: every write
\* acknowledged survives any MinHolders failures (counting the ones down
\* now), and w's writes survive any M once no holder that is up misses one
\* of w's writes acknowledged degraded.  (Why per worker and not per write:
\* a write acknowledged by every holder after a degraded one is lost with it
\* when the only holders that stored the degraded one fail, since a replay
\* cannot cross the hole.  Why not globally MinHolders: a worker without
\* such a hole, or every worker once the holes are covered, is back to M,
\* and the model checks that.)  Identical to the M bound when MinHolders = M.
AckedRecoverable ==
    \A w \in Workers : \A f \in FailuresOf(Durability(w)) :
        ackedMax[w] <= Recover(w, f[1], f[2])

\* What a reader has seen survives any M losses ([MinHolders < M] any
\* Durability(w), as above), and a worker that serves after a recovery
\* serves at least that.
ReadNeverLost ==
    /\ \A w \in Workers : \A f \in FailuresOf(Durability(w)) :
          seen[w] <= Recover(w, f[1], f[2])
    /\ \A w \in Workers : wst[w] = "up" => seen[w] <= applied[w]

\* The image the last rebuild of w decoded equals w's image at the generation
\* it decoded, and so does every decode possible now (any failure pattern).
RebuiltEqualsLost ==
    /\ \A w \in Workers : rebuilt[w][1] # NoGen => rebuilt[w][2] = Img(w, rebuilt[w][1])
    /\ \A f \in Failures : \A w \in f[1] : \A o \in Options(w, f[1], f[2]) :
          o[2] = Img(w, o[1])

\* (Action property) A zombie gets a write acknowledged after the new
\* incarnation has started only if that write is part of the state the new
\* incarnation started from (every holder stored it before being fenced):
\* it is never lost, nor a different batch from the new incarnation's write
\* with the same seq.
Fencing ==
    [][ZCommit => (ze < iep[zw] => zwr <= base[zw])]_vars

\* Every generation a holder records for a worker whose disk is intact is one
\* the worker can supply (the empty one or a pinned snapshot): needed to decode
\* other workers and to compute the deltas that re-protect that holder.
HolderGenPinned ==
    \A w \in Workers : wst[w] # "lost" =>
        \A j \in Holders : Avail(w, rec[j][w])

\* [CommitFirst] A write that was given up (undone) and reported FAILED is
\* never served afterwards: no serving worker's engine holds its batch, and
\* no recovery possible now (any failure pattern) replays it from a tail.
\* (Under a later write, that takes away values readers saw after the undo.)
\* [SettleBeforeFail] A write reported as of unknown outcome may be.
NoFailedWriteRevived ==
    /\ \A w \in Workers : wst[w] = "up" => ~revived[w]
    /\ \A f \in Failures : \A w \in Workers : ~RecoverRevives(w, f[1], f[2])

\* [SettleBeforeFail] Witness, checked only in tla/findings/ (expected to be
\* violated): no recovery possible now replays a write reported as of UNKNOWN
\* outcome.  Not a property of the code (that is what UNKNOWN allows); its
\* counterexample shows the case that remains.
NoUnknownWriteRevived ==
    \A f \in Failures : \A w \in Workers : ~RecoverRevivesOf(unsure[w], w, f[1], f[2])

\* [MinHolders < M] Witness, checked only in tla/findings/ (expected to be
\* violated): no worker whose disk is lost has a holder with a hole in its
\* tail (a write acknowledged degraded that the holder missed, below an entry
\* it stored).  Its counterexample shows that Protection_degraded.cfg reaches
\* the rebuilds that finding 8 is about, and passes with them.
HoleBelowEntry(w) ==
    \E j \in Holders : \E s \in degraded[w] :
        s > rec[j][w] /\ s \notin tail[j][w] /\ \E t \in tail[j][w] : t > s
NoHoleAtRebuild == \A w \in Workers : ~(wst[w] = "lost" /\ HoleBelowEntry(w))

\* Model sanity: a given-up seq (whatever was reported) is never taken again
\* by a serving worker (Img gives seq s one content: that of s - 1).
DroppedNotReused ==
    \A w \in Workers : wst[w] = "up" => \A s \in GivenUp(w) : s <= applied[w]

(***************************************************************************)
(* Liveness                                                                *)
(***************************************************************************)

\* Protocol steps are weakly fair; failures, writes, reads and advances are not.
Fairness ==
    \A w \in Workers :
        /\ WF_vars(Rebuild(w)) /\ WF_vars(Restart(w))
        /\ WF_vars(ReleaseOld(w)) /\ WF_vars(CommitWrite(w))
        /\ WF_vars(SettleAdvance(w)) /\ WF_vars(ReportGiveUp(w))
        /\ \A j \in Holders : WF_vars(DeliverAppend(w, j)) /\ WF_vars(DeliverDelta(w, j))


FairSpec == Spec /\ Fairness

\* A worker whose disk was lost is rebuilt and serves again.
RebuildCompletes == \A w \in Workers : (wst[w] = "lost") ~> (wst[w] = "up")

\* [SettleBeforeFail] A given-up write is eventually reported, and every
\* holder eventually records a generation that covers its seq (so no tail
\* keeps it and no rebuild can revive it any more).
GivenUpSettled ==
    \A w \in Workers : \A s \in 1..MaxSeq :
        (s \in settling[w] \cup unsure[w]) ~>
            (s \notin settling[w] /\ \A j \in Holders : rec[j][w] >= s)
=============================================================================
