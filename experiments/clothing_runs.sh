#!/usr/bin/env bash
# Clothing-review text tasks (issue 4, part 5), one run after another, each into outputs/clothing/<name>:
#   tfidf            TF-IDF 1-2-grams + logistic regression / ridge on the same split (experiments/clothing_tfidf.py)
#   frozen_intent    frozen all-MiniLM-L6-v2 embeddings (computed once, cached) + a trained linear head
#   frozen_value     the same for Rating (reuses the cached embeddings)
#   finetune_intent  full fine-tuning, 1 epoch, AdamW 3e-5 (head 1e-3), warm-up 50 steps + cosine, batch 32
#   finetune_value   the same for Rating
#   lora_intent      LoRA (r 8 on query/value) instead of full fine-tuning, lr 5e-4, 128 tokens
# A run whose directory holds metrics.json (tfidf: tfidf.json) is skipped, so the script can be restarted; an
# interrupted run resumes in place from checkpoints/last.ckpt (written every 50 training steps) with resume=true.
# A run interrupted mid-epoch continues with the epoch's remaining number of steps, drawn in a fresh random order
# (Lightning's dataloaders are not resumable), so a few reviews may be seen twice or not at all in that epoch.
# Usage: OMP_NUM_THREADS=1 nohup bash experiments/clothing_runs.sh [data_root] > outputs/clothing/queue.out 2>&1 &
#        (data_root default ../shared/data; ONLY=name1,name2 runs just those cells; OUT=dir: another output dir)
set -u
root=${1:-../shared/data}
out=${OUT:-outputs/clothing}
mkdir -p "$out"
log() { echo "$(date -u +%FT%TZ) $*" >> "$out/queue.log"; }

frozen=(task.fine_tune=false dataset.batch_size=256 optimizer.lr=1e-2 task.head_lr=null trainer.max_epochs=150
        callbacks.early_stopping.patience=40)
declare -A cells=(
  [frozen_intent]="experiment=clothing_intent ${frozen[*]}"
  [frozen_value]="experiment=clothing_value ${frozen[*]}"
  [finetune_intent]="experiment=clothing_intent"
  [finetune_value]="experiment=clothing_value"
  [lora_intent]="experiment=clothing_intent text_encoder=minilm_lora text_encoder.max_length=128 optimizer.lr=5e-4"
)
order=(tfidf frozen_intent frozen_value finetune_intent finetune_value lora_intent)

wanted() { [ -z "${ONLY:-}" ] || [[ ",$ONLY," == *",$1,"* ]]; }

for name in "${order[@]}"; do
  wanted "$name" || continue
  if [ "$name" = tfidf ]; then
    [ -f "$out/tfidf.json" ] && continue
    log "start tfidf"
    /usr/bin/time -v -o "$out/tfidf.time" python experiments/clothing_tfidf.py --data-root "$root" \
      --json "$out/tfidf.json" > "$out/tfidf.txt" 2>&1
    log "end tfidf rc=$?"
    continue
  fi
  dir=$out/$name
  [ -f "$dir/metrics.json" ] && continue
  extra=()
  if [ -f "$dir/checkpoints/last.ckpt" ] && [ -f "$dir/config.yaml" ]; then
    extra=(resume=true)
  elif [ -d "$dir" ]; then
    mv "$dir" "$dir.interrupted-$(date +%s)"
  fi
  log "start $name ${extra[*]:-}"
  mkdir -p "$dir"
  # shellcheck disable=SC2086  # the cell's overrides are split on purpose
  /usr/bin/time -a -v -o "$dir.time" recforge-train ${cells[$name]} dataset.root="$root" hydra.run.dir="$dir" \
    "${extra[@]}" >> "$dir.stdout" 2>&1
  log "end $name rc=$?"
done
