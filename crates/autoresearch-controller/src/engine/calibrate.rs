use super::*;

impl Controller {
    /// `[compare] calibrate = k`: evaluates the head until it has `k`
    /// samples (failed ones count), the missing ones as one batch, then
    /// records the noise model they give.
    /// Done once per `run`, before its first candidate; samples the head
    /// already has count, so a restarted loop does not measure it again.
    pub(super) async fn calibrate(&self, head: &Head) -> Result<(), LoopError> {
        let k = self.cfg.calibrate;
        if k == 0 || head.run_id.is_empty() {
            return Ok(());
        }
        let _one_at_a_time = self.incumbent_lock.lock().await;
        let sample = self.sample_count(&head.run_id, &head.commit).await;
        if sample < k && self.shutdown.level() < Shutdown::DRAIN {
            self.emit(Event::Step {
                run_id: head.run_id.clone(),
                step: format!("calibrating the noise: samples {} to {k}", sample + 1),
            });
            // One batch: side by side where the executor can.
            self.evaluate_samples(
                &head.run_id,
                &head.run_id,
                &head.commit,
                k - sample,
                CALIBRATE_STEP,
            )
            .await?;
        }
        log_release(&head.run_id, self.executor.release(&head.run_id).await);
        let model = self.noise_model().await;
        self.record_noise(model).await
    }
}
