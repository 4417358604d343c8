-------------------------------- MODULE Raft --------------------------------
(***************************************************************************)
(* Raft consensus (Ongaro & Ousterhout, "In Search of an Understandable    *)
(* Consensus Algorithm", extended version), for Tessera's Raft library     *)
(* raft/src/raft.cc.  Where the library departs from the paper in a way    *)
(* that could matter for safety, the model follows the library; each      *)
(* action's comment names the code it stands for.                          *)
(*                                                                         *)
(* What is modelled:                                                       *)
(*  - Per server, durable: currentTerm, votedFor, log and commitIndex.     *)
(*    The library's HardState is {term, vote, commit}; the driver saves it *)
(*    and the new entries in one LMDB transaction before it sends the      *)
(*    messages that depend on them, so a crash keeps all four.  Volatile:  *)
(*    role, a candidate's votes, a leader's matchIndex.                    *)
(*  - Elections: a timeout (Timeout), RequestVote with the up-to-date rule *)
(*    and one durable vote per term (HandleRequestVote), counting votes    *)
(*    and becoming leader with a no-op of the new term (HandleVote).       *)
(*  - Replication: the leader's proposal (ClientRequest); AppendEntries    *)
(*    with the check on the entry before the new ones, a merge that        *)
(*    truncates only from the first conflicting entry (so a late, shorter  *)
(*    AppendEntries does not cut what a newer one appended), the library's *)
(*    shortcut "prevIndex below my commit index: acknowledge my commit     *)
(*    index", and commitIndex := max(commitIndex, min(leader's commit,     *)
(*    last new index)) (AppendBelowCommit, AppendReject, AppendAccept);    *)
(*    the leader's matchIndex and its commit rule: the highest index a     *)
(*    quorum holds, and only if that entry is of the leader's term         *)
(*    (HandleAppendOk, the rule of the paper's Figure 8).                  *)
(*  - Heartbeats carrying min(matchIndex[follower], commitIndex), which    *)
(*    the follower commits without any log check (HandleHeartbeat).        *)
(*  - Crashes and restarts, and a leader stepping down (check-quorum): see *)
(*    Timeout.  They are not bounded: they only ever make a server a       *)
(*    follower of its own term.                                            *)
(*  - The network loses, duplicates, delays and reorders messages (see     *)
(*    "The network" below for how the model keeps that small).  Requests  *)
(*    of candidates and leaders are broadcast: any other server may        *)
(*    receive them, which covers every choice of recipients.               *)
(*                                                                         *)
(* Abstracted (see also tla/README.md):                                    *)
(*  - nextIndex, probing and the reject hint.  An AppendEntries carries    *)
(*    the leader's whole log and commit index, and the receiver takes any  *)
(*    prevIndex p and any last entry e >= p of it: every message the       *)
(*    library can send from that leader state, whatever its nextIndex and  *)
(*    max_bytes.  A leader sends one whenever its log or commit index      *)
(*    changes (as BroadcastAppend does); a re-send of the same state is a  *)
(*    duplicate.  So rejections carry nothing the model needs; none is     *)
(*    sent, and neither are the other messages that carry only a term      *)
(*    (vote rejections, the answer to a stale leader): every term a server *)
(*    can reach is in the broadcast RequestVote of that term.              *)
(*  - Pre-vote, check-quorum leases ("InLease"), "vote only if no leader   *)
(*    is known", leadership transfer: they only restrict when a server     *)
(*    campaigns or votes (a pre-vote changes no durable state, and         *)
(*    TimeoutNow campaigns without one), so the model has more behaviours  *)
(*    than the library, not fewer.                                         *)
(*  - Snapshots and compaction, ReadIndex, membership changes, timers (any *)
(*    server may time out at any time), the application of entries.       *)
(***************************************************************************)
EXTENDS Naturals, Sequences, FiniteSets, TLC

CONSTANTS
    Server,     \* the voters
    Value,      \* client commands
    Nil,        \* "no vote"
    Noop,       \* the value of a new leader's no-op entry
    MaxTerm,    \* no server campaigns beyond this term
    MaxLogLen,  \* no log grows beyond this (state constraint)
    CurrentTermRule, \* TRUE: a leader counts replicas only for an entry of
                     \* its term (the library); FALSE: of any term (a
                     \* mutation, tla/findings/Raft_count_old_terms.cfg)
    LoseCommit       \* TRUE: a restart may come back with an older commit
                     \* index (Restart; orchestrator/src/replicator.cc)

VARIABLES
    currentTerm,   \* durable (HardState.term)
    votedFor,      \* durable (HardState.vote)
    log,           \* durable: a sequence of [term, val]
    commitIndex,   \* durable (HardState.commit)
    role,          \* volatile: "Follower", "Candidate" or "Leader"
    votesGranted,  \* volatile: a candidate's votes, its own included
    matchIndex,    \* volatile: matchIndex[i][j], leader i's knowledge of j
    msgs,          \* the messages in the network
    committed      \* history, for the invariants only: [idx, ent, term]
                   \* when ent became known committed at idx, first at a
                   \* server in term `term`

vars == <<currentTerm, votedFor, log, commitIndex, role, votesGranted, matchIndex, msgs,
          committed>>

-----------------------------------------------------------------------------
(* Helpers *)

Min(a, b) == IF a < b THEN a ELSE b
Max(a, b) == IF a > b THEN a ELSE b

IsQuorum(S) == 2 * Cardinality(S) > Cardinality(Server)

LastTerm(l) == IF Len(l) = 0 THEN 0 ELSE l[Len(l)].term

\* The term of entry n of l, 0 for n = 0 (RaftLog::TermOrZero).
TermAt(l, n) == IF n = 0 THEN 0 ELSE l[n].term

\* RaftLog::IsUpToDate: a candidate whose last entry is (lastIndex,
\* lastTerm) is at least as up to date as the log l.
UpToDate(lastIndex, lastTerm, l) ==
    \/ lastTerm > LastTerm(l)
    \/ lastTerm = LastTerm(l) /\ lastIndex >= Len(l)

NoMatch == [j \in Server |-> 0]

\* Ghost: server i, in term t, moves its commit index from old to new over
\* its log l; entries not yet known committed are recorded with t.
NewlyCommitted(l, old, new, t) ==
    {[idx |-> n, ent |-> l[n], term |-> t] :
        n \in {k \in (old + 1)..Min(new, Len(l)) :
                 ~\E c \in committed : c.idx = k /\ c.ent = l[k]}}

\* The AppendEntries of leader i with log l and commit index c.
AppendMsg(i, l, c) ==
    [type |-> "Append", term |-> currentTerm[i], src |-> i, log |-> l, commit |-> c]

\* Raft::BroadcastHeartbeat: to each follower j, min(matchIndex[j], c).
\* The library sends them on every heartbeat tick; the model sends them
\* whenever a value rises (the other effects of a heartbeat are not
\* modelled, so only a positive value matters).
HeartbeatMsgs(i, match, c) ==
    {[type |-> "Heartbeat", term |-> currentTerm[i], src |-> i, dst |-> j,
      commit |-> Min(match[j], c)] : j \in {k \in Server \ {i} : Min(match[k], c) > 0}}

(***************************************************************************)
(* The network.  A message, once sent, may be delivered any number of      *)
(* times, in any order, or never.  Two reductions keep the set small:      *)
(*                                                                         *)
(*  - Dead messages are dropped (Alive).  This is exact.                   *)
(*  - One message per channel.  A channel is a kind of message, its sender,*)
(*    its receiver (none for a broadcast) and its term; a newer message on *)
(*    a channel replaces the older one.  On the channels that carry more   *)
(*    than one message per term the newer message holds more (a leader's   *)
(*    log only grows in its term; commit indexes and acknowledged indexes  *)
(*    only grow), and the receiver of an AppendEntries may take any part   *)
(*    of the log, so an old AppendEntries delivered late is the newest one *)
(*    taken in part.  What is lost is a late message's smaller commit      *)
(*    index or acknowledged index: the receiver learns the newer value,    *)
(*    which is also true (see tla/README.md).                              *)
(***************************************************************************)
SameChannel(x, m) ==
    /\ x.type = m.type
    /\ x.src = m.src
    /\ x.term = m.term
    /\ x.type \in {"RequestVote", "Append"} \/ x.dst = m.dst

Rank(m) ==
    CASE m.type = "Append" -> Len(m.log) + m.commit
      [] m.type = "AppendOk" -> m.match
      [] m.type = "Heartbeat" -> m.commit
      [] OTHER -> 0

\* A message is dead when no server can ever act on it again: every handler
\* ignores a term below the receiver's, and each condition below, once
\* false, stays false (terms, commit indexes and a leader's matchIndex only
\* grow; a vote cast in a term stays; a server is candidate or leader at
\* most once per term).
Alive(m) ==
    CASE m.type = "RequestVote" ->
            \E i \in Server \ {m.src} :
                \/ currentTerm[i] < m.term
                \/ currentTerm[i] = m.term /\ votedFor[i] = Nil
      [] m.type = "Vote" ->
            /\ role[m.dst] = "Candidate"
            /\ currentTerm[m.dst] = m.term
            /\ m.src \notin votesGranted[m.dst]
      [] m.type = "Append" ->
            \E i \in Server \ {m.src} : currentTerm[i] <= m.term
      [] m.type = "AppendOk" ->
            /\ role[m.dst] = "Leader"
            /\ currentTerm[m.dst] = m.term
            /\ m.match > matchIndex[m.dst][m.src]
      [] m.type = "Heartbeat" ->
            \/ currentTerm[m.dst] < m.term
            \/ /\ currentTerm[m.dst] = m.term
               /\ role[m.dst] = "Candidate" \/ commitIndex[m.dst] < m.commit

\* The network after a step that sent the messages S (on distinct channels):
\* a sent message replaces an older one on its channel; then only the live
\* messages are kept.  The last conjunct of every action (it reads the new
\* values of the other variables).
Send(S) ==
    LET new  == {m \in S : \A x \in msgs : SameChannel(x, m) => Rank(x) < Rank(m)}
        kept == {x \in msgs : \A m \in new : ~SameChannel(x, m)}
    IN msgs' = {m \in kept \cup new : Alive(m)'}

-----------------------------------------------------------------------------
(* Initial state: every server a follower in term 0 with an empty log. *)

Init ==
    /\ currentTerm = [i \in Server |-> 0]
    /\ votedFor = [i \in Server |-> Nil]
    /\ log = [i \in Server |-> <<>>]
    /\ commitIndex = [i \in Server |-> 0]
    /\ role = [i \in Server |-> "Follower"]
    /\ votesGranted = [i \in Server |-> {}]
    /\ matchIndex = [i \in Server |-> NoMatch]
    /\ msgs = {}
    /\ committed = {}

-----------------------------------------------------------------------------
(* Elections *)

\* An election timeout (TickElection -> Hup -> StartCampaign, here without
\* the pre-vote round, as for TimeoutNow): BecomeCandidate (term + 1, vote
\* for itself), then a RequestVote with the last entry of its log.
\*
\* For a leader this step is a crash and restart (RawNode::Create over the
\* same storage: Init -> BecomeFollower(term, 0), which loses role, votes,
\* matchIndex and keeps term, vote, log and commit index), or a step-down
\* for lack of a quorum (TickHeartbeat's check-quorum), followed by an
\* election timeout.  The follower in between, of the leader's term and with
\* its vote, can do nothing that the leader cannot do too except time out,
\* so the model goes to the timeout directly.  Likewise a candidate's
\* restart, or its loss of an election (Poll's kLost), is not a step of its
\* own: a follower of the candidate's term with its vote can do nothing the
\* candidate cannot (the candidate could still win); and a follower's
\* restart changes nothing the model holds.
Timeout(i) ==
    /\ currentTerm[i] < MaxTerm
    /\ currentTerm' = [currentTerm EXCEPT ![i] = @ + 1]
    /\ votedFor' = [votedFor EXCEPT ![i] = i]
    /\ role' = [role EXCEPT ![i] = "Candidate"]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {i}]
    /\ matchIndex' = [matchIndex EXCEPT ![i] = NoMatch]
    /\ UNCHANGED <<log, commitIndex, committed>>
    /\ Send({[type |-> "RequestVote", term |-> currentTerm[i] + 1, src |-> i,
              lastIndex |-> Len(log[i]), lastTerm |-> LastTerm(log[i])]})

\* StepNetwork (a higher term first makes the receiver a follower of that
\* term, with no vote) + HandleVoteRequest: grant if it has not voted for
\* another server in this term and the candidate's log is at least as up to
\* date.  The vote is durable before the grant is sent.  A request of a
\* lower term is ignored (its rejection only carries a term).
HandleRequestVote(i, m) ==
    /\ m.type = "RequestVote" /\ m.src # i
    /\ m.term >= currentTerm[i]
    /\ LET newer == m.term > currentTerm[i]
           vote  == IF newer THEN Nil ELSE votedFor[i]
           grant == /\ vote \in {Nil, m.src}
                    /\ UpToDate(m.lastIndex, m.lastTerm, log[i])
       IN /\ newer \/ grant
          /\ currentTerm' = [currentTerm EXCEPT ![i] = m.term]
          /\ votedFor' = [votedFor EXCEPT ![i] = IF grant THEN m.src ELSE vote]
          /\ IF newer
               THEN /\ role' = [role EXCEPT ![i] = "Follower"]
                    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
                    /\ matchIndex' = [matchIndex EXCEPT ![i] = NoMatch]
               ELSE UNCHANGED <<role, votesGranted, matchIndex>>
          /\ UNCHANGED <<log, commitIndex, committed>>
          /\ Send(IF grant THEN {[type |-> "Vote", term |-> m.term, src |-> i, dst |-> m.src]}
                           ELSE {})

\* StepCandidate's Poll on a grant of its term.  With a quorum it becomes
\* leader in the same step (BecomeLeader: matchIndex reset, a no-op of its
\* term appended) and broadcasts AppendEntries.
HandleVote(i, m) ==
    /\ m.type = "Vote" /\ m.dst = i
    /\ role[i] = "Candidate"
    /\ m.term = currentTerm[i]
    /\ m.src \notin votesGranted[i]
    /\ UNCHANGED <<currentTerm, votedFor, commitIndex, committed>>
    /\ LET g == votesGranted[i] \cup {m.src}
           l == Append(log[i], [term |-> currentTerm[i], val |-> Noop])
       IN IF IsQuorum(g)
            THEN /\ role' = [role EXCEPT ![i] = "Leader"]
                 /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
                 /\ matchIndex' = [matchIndex EXCEPT ![i] = NoMatch]
                 /\ log' = [log EXCEPT ![i] = l]
                 /\ Send({AppendMsg(i, l, commitIndex[i])})
            ELSE /\ votesGranted' = [votesGranted EXCEPT ![i] = g]
                 /\ UNCHANGED <<role, matchIndex, log>>
                 /\ Send({})

-----------------------------------------------------------------------------
(* Log replication *)

\* Propose: the leader appends a client command of its term and broadcasts
\* AppendEntries.  (A value at most once per log, to keep the model small.)
ClientRequest(i, v) ==
    /\ role[i] = "Leader"
    /\ Len(log[i]) < MaxLogLen
    /\ \A k \in 1..Len(log[i]) : log[i][k].val # v
    /\ LET l == Append(log[i], [term |-> currentTerm[i], val |-> v])
       IN /\ log' = [log EXCEPT ![i] = l]
          /\ UNCHANGED <<currentTerm, votedFor, commitIndex, role, votesGranted, matchIndex,
                         committed>>
          /\ Send({AppendMsg(i, l, commitIndex[i])})

\* RaftLog::MaybeAppend's merge: the entries that match (same index, same
\* term) are kept; from the first that does not, the rest is replaced.
Merge(l, prev, ents) ==
    LET conflicts == {k \in 1..Len(ents) : prev + k > Len(l) \/ l[prev + k].term # ents[k].term}
        first == CHOOSE k \in conflicts : \A k2 \in conflicts : k <= k2
    IN IF conflicts = {} THEN l
       ELSE SubSeq(l, 1, prev + first - 1) \o SubSeq(ents, first, Len(ents))

\* StepNetwork for an AppendEntries or a heartbeat of term m.term >= the
\* receiver's: a higher term makes it a follower of that term with no vote,
\* the same term makes a candidate a follower.  (A lower term is ignored:
\* its answer only carries a term.  A leader ignores its own term's.)
FromLeader(i, m) ==
    /\ m.src # i
    /\ m.term >= currentTerm[i]
    /\ ~(m.term = currentTerm[i] /\ role[i] = "Leader")
    /\ currentTerm' = [currentTerm EXCEPT ![i] = m.term]
    /\ votedFor' = [votedFor EXCEPT ![i] = IF m.term > currentTerm[i] THEN Nil ELSE @]
    /\ role' = [role EXCEPT ![i] = "Follower"]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex' = [matchIndex EXCEPT ![i] = NoMatch]

\* Whether the step changes the receiver's term or role.
NewTermOrRole(i, m) == m.term > currentTerm[i] \/ role[i] # "Follower"

\* StepFollower's kAppend -> HandleAppend, for an AppendEntries with
\* prevIndex p and the leader's entries p+1..e.  The receiver picks p and e
\* (whatever nextIndex and max_bytes the leader has), so there are three
\* outcomes:

\* p below the commit index: acknowledge the commit index (nothing else).
AppendBelowCommit(i, m) ==
    /\ m.type = "Append"
    /\ commitIndex[i] > 0
    /\ FromLeader(i, m)
    /\ UNCHANGED <<log, commitIndex, committed>>
    /\ Send({[type |-> "AppendOk", term |-> m.term, src |-> i, dst |-> m.src,
              match |-> commitIndex[i]]})

\* The log does not have the leader's entry at p (RaftLog::MatchTerm fails):
\* reject.  The rejection is not modelled, so only the term/role change is.
AppendReject(i, m) ==
    /\ m.type = "Append"
    /\ NewTermOrRole(i, m)
    /\ \E q \in commitIndex[i]..Len(m.log) :
          ~(q <= Len(log[i]) /\ TermAt(log[i], q) = TermAt(m.log, q))
    /\ FromLeader(i, m)
    /\ UNCHANGED <<log, commitIndex, committed>>
    /\ Send({})

\* The log has the leader's entry at p >= the commit index: RaftLog::
\* MaybeAppend merges entries p+1..e, commits up to min(leader's commit, e),
\* and e is acknowledged.  Every such p gives the same result (log
\* matching), so the model takes the highest.
AppendAccept(i, m, e) ==
    LET ci == commitIndex[i]
        Match(q) == q <= Len(log[i]) /\ TermAt(log[i], q) = TermAt(m.log, q)
        P == {q \in ci..e : Match(q)}
        p == CHOOSE q \in P : \A q2 \in P : q >= q2
        newLog == Merge(log[i], p, SubSeq(m.log, p + 1, e))
        newCI == Max(ci, Min(m.commit, e))
    IN /\ m.type = "Append"
       /\ ci <= e /\ e <= Len(m.log)
       /\ P # {}
       /\ FromLeader(i, m)
       /\ log' = [log EXCEPT ![i] = newLog]
       /\ commitIndex' = [commitIndex EXCEPT ![i] = newCI]
       /\ committed' = committed \cup NewlyCommitted(newLog, ci, newCI, m.term)
       /\ Send({[type |-> "AppendOk", term |-> m.term, src |-> i, dst |-> m.src, match |-> e]})

\* The highest index a quorum holds, the leader i counting for its whole log
\* (Raft::MaybeCommit: the Quorum()-th largest match).
QuorumMatch(i, match) ==
    LET agree(n) == {i} \cup {j \in Server : match[j] >= n}
        ok == {n \in 0..Len(log[i]) : IsQuorum(agree(n))}
    IN CHOOSE n \in ok : \A n2 \in ok : n >= n2

\* StepLeader's kAppendResponse -> HandleAppendSuccess: matchIndex only
\* grows (Progress::MaybeUpdate); Raft::MaybeCommit commits the quorum's
\* index only if that entry is of the leader's term (RaftLog::MaybeCommit;
\* not with CurrentTermRule = FALSE), and then broadcasts AppendEntries with
\* the new commit index.  The heartbeats' values may rise.
HandleAppendOk(i, m) ==
    /\ m.type = "AppendOk" /\ m.dst = i
    /\ role[i] = "Leader"
    /\ m.term = currentTerm[i]
    /\ matchIndex[i][m.src] < m.match
    /\ LET match == [matchIndex[i] EXCEPT ![m.src] = m.match]
           n     == QuorumMatch(i, match)
           ok    == TermAt(log[i], n) = currentTerm[i] \/ ~CurrentTermRule
           newCI == IF n > commitIndex[i] /\ ok THEN n ELSE commitIndex[i]
       IN /\ matchIndex' = [matchIndex EXCEPT ![i] = match]
          /\ commitIndex' = [commitIndex EXCEPT ![i] = newCI]
          /\ committed' = committed \cup
                            NewlyCommitted(log[i], commitIndex[i], newCI, currentTerm[i])
          /\ UNCHANGED <<currentTerm, votedFor, log, role, votesGranted>>
          /\ Send(HeartbeatMsgs(i, match, newCI) \cup
                  (IF newCI > commitIndex[i] THEN {AppendMsg(i, log[i], newCI)} ELSE {}))

\* StepFollower's kHeartbeat: RaftLog::CommitTo(m.commit), with no log
\* check.  (CommitTo asserts that the commit index stays within the log:
\* see CommitIndexSound.)
HandleHeartbeat(i, m) ==
    LET c == Max(commitIndex[i], m.commit)
    IN /\ m.type = "Heartbeat" /\ m.dst = i
       /\ NewTermOrRole(i, m) \/ c > commitIndex[i]
       /\ FromLeader(i, m)
       /\ commitIndex' = [commitIndex EXCEPT ![i] = c]
       /\ committed' = committed \cup NewlyCommitted(log[i], commitIndex[i], c, m.term)
       /\ UNCHANGED log
       /\ Send({})

-----------------------------------------------------------------------------
(* Crashes *)

\* A crash and restart that loses commit-index progress: RawNode::Create
\* (Init -> BecomeFollower(term, 0)) over the same storage, whose HardState
\* commit may be older than the commit index the server had reached,
\* because orchestrator/src/replicator.cc does not write a Ready that only
\* moves the commit index.  (A restart that keeps the commit index is part
\* of Timeout.)
Restart(i, c) ==
    /\ LoseCommit
    /\ c < commitIndex[i]
    /\ role' = [role EXCEPT ![i] = "Follower"]
    /\ votesGranted' = [votesGranted EXCEPT ![i] = {}]
    /\ matchIndex' = [matchIndex EXCEPT ![i] = NoMatch]
    /\ commitIndex' = [commitIndex EXCEPT ![i] = c]
    /\ UNCHANGED <<currentTerm, votedFor, log, committed>>
    /\ Send({})

-----------------------------------------------------------------------------

\* Receiving some message of msgs (every one is alive).  Each handler checks
\* the message's type and its receiver.
ReceiveRequestVote(i) == \E m \in msgs : HandleRequestVote(i, m)
ReceiveVote(i) == \E m \in msgs : HandleVote(i, m)
ReceiveAppendBelowCommit(i) == \E m \in msgs : AppendBelowCommit(i, m)
ReceiveAppendReject(i) == \E m \in msgs : AppendReject(i, m)
ReceiveAppendAccept(i) == \E m \in msgs, e \in 0..MaxLogLen : AppendAccept(i, m, e)
ReceiveAppendOk(i) == \E m \in msgs : HandleAppendOk(i, m)
ReceiveHeartbeat(i) == \E m \in msgs : HandleHeartbeat(i, m)

Next ==
    \/ \E i \in Server : Timeout(i)
    \/ \E i \in Server, c \in 0..MaxLogLen : Restart(i, c)
    \/ \E i \in Server, v \in Value : ClientRequest(i, v)
    \/ \E i \in Server : ReceiveRequestVote(i)
    \/ \E i \in Server : ReceiveVote(i)
    \/ \E i \in Server : ReceiveAppendBelowCommit(i)
    \/ \E i \in Server : ReceiveAppendReject(i)
    \/ \E i \in Server : ReceiveAppendAccept(i)
    \/ \E i \in Server : ReceiveAppendOk(i)
    \/ \E i \in Server : ReceiveHeartbeat(i)

Spec == Init /\ [][Next]_vars

\* The model's bound (TLC state constraint); terms are bounded by Timeout.
StateBound == \A i \in Server : Len(log[i]) <= MaxLogLen

Symmetry == Permutations(Server) \cup Permutations(Value)

-----------------------------------------------------------------------------
(* Invariants *)

TypeOK ==
    /\ currentTerm \in [Server -> 0..MaxTerm]
    /\ votedFor \in [Server -> Server \cup {Nil}]
    /\ \A i \in Server : \A n \in 1..Len(log[i]) :
          log[i][n] \in [term : 1..MaxTerm, val : Value \cup {Noop}]
    /\ commitIndex \in [Server -> Nat]
    /\ role \in [Server -> {"Follower", "Candidate", "Leader"}]
    /\ votesGranted \in [Server -> SUBSET Server]
    /\ matchIndex \in [Server -> [Server -> Nat]]

\* At most one leader per term.  Checked on each state (two leaders of one
\* term at the same time), which loses nothing: if a term had two leaders
\* one after the other, the first one's step-down and everything that
\* follows from it can be postponed (it is of a later term, which the
\* second one's voters have not seen, or they could not vote in this term),
\* so a state with both leaders at once is reachable too.
ElectionSafety ==
    \A i, j \in Server :
        (i # j /\ role[i] = "Leader" /\ role[j] = "Leader") => currentTerm[i] # currentTerm[j]

\* Two logs with an entry of the same index and term are identical up to it.
\* The logs in AppendEntries in flight are checked too (HandleAppend relies
\* on them).
LogsMatch(l1, l2) ==
    \A n \in 1..Min(Len(l1), Len(l2)) :
        l1[n].term = l2[n].term => SubSeq(l1, 1, n) = SubSeq(l2, 1, n)

LogMatching ==
    LET logs == {log[i] : i \in Server} \cup {m.log : m \in {x \in msgs : x.type = "Append"}}
    IN \A l1, l2 \in logs : LogsMatch(l1, l2)

\* An entry known committed in term t is in the log of every leader of a term
\* >= t (of a later term: the paper's Leader Completeness; of term t: that
\* term's leader, which committed it or told the others so).
LeaderCompleteness ==
    \A i \in Server : role[i] = "Leader" =>
        \A c \in committed : c.term <= currentTerm[i] =>
            c.idx <= Len(log[i]) /\ log[i][c.idx] = c.ent

\* No two servers ever commit different entries at one index: over the whole
\* history, and between the servers' committed prefixes now.
StateMachineSafety ==
    /\ \A c1, c2 \in committed : c1.idx = c2.idx => c1.ent = c2.ent
    /\ \A i, j \in Server :
          \A n \in 1..Min(Min(commitIndex[i], commitIndex[j]), Min(Len(log[i]), Len(log[j]))) :
             log[i][n] = log[j][n]

\* The library's assertions hold: a commit index never passes the end of the
\* log (RaftLog::CommitTo) and a committed entry is never overwritten
\* (RaftLog::MaybeAppend, RaftLog::Append): each server's committed prefix
\* is still what was committed.
CommitIndexSound ==
    \A i \in Server :
        /\ commitIndex[i] <= Len(log[i])
        /\ \A n \in 1..Min(commitIndex[i], Len(log[i])) :
              \E c \in committed : c.idx = n /\ c.ent = log[i][n]

\* What a heartbeat's commit index and the "below my commit index"
\* acknowledgement rely on: while a follower is in its leader's term, its
\* log holds the leader's first matchIndex entries.
MatchIndexSound ==
    \A i, j \in Server :
        (role[i] = "Leader" /\ j # i /\ currentTerm[j] = currentTerm[i]) =>
            /\ matchIndex[i][j] <= Len(log[j])
            /\ matchIndex[i][j] <= Len(log[i])
            /\ SubSeq(log[j], 1, matchIndex[i][j]) = SubSeq(log[i], 1, matchIndex[i][j])

\* A leader's log only grows while it leads (an action property).
LeaderAppendOnly ==
    [][\A i \in Server :
         (role[i] = "Leader" /\ role'[i] = "Leader" /\ currentTerm'[i] = currentTerm[i])
            => SubSeq(log'[i], 1, Len(log[i])) = log[i]]_vars

-----------------------------------------------------------------------------
(* Reachability witnesses.  Each is EXPECTED TO BE VIOLATED (configurations *)
(* tla/findings/Raft_witness_*.cfg): the counterexample shows that the      *)
(* model reaches the situation, so the invariants above are not vacuous.    *)

\* Violated: a client command gets committed.
NoValueCommitted == \A c \in committed : c.ent.val = Noop

\* Violated: an entry of an earlier term is committed indirectly, through an
\* entry of a later term (the situation of Figure 8).
NoIndirectCommit == \A c \in committed : c.ent.term = c.term

\* Violated: a server holds an entry that conflicts with a committed one at
\* the same index (so it has to be truncated).
NoConflictWithCommitted ==
    \A i \in Server, c \in committed :
        c.idx <= Len(log[i]) => log[i][c.idx] = c.ent

=============================================================================
