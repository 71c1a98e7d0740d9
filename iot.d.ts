export * from './index'
export { default } from './index'
